"""The README's growth section is generated from benchmarks/results/growth.json (common.report.growth_readme) and
says the machine was idle only from what other processes used, never from the load average."""

from __future__ import annotations

import copy
import json
import re

import pytest

from common.report import growth_readme, readme

GROWTH = readme.RESULTS / "growth.json"


def _block(text: str) -> str:
    match = re.search(r"<!-- generated: growth -->\n(.*?)<!-- end generated: growth -->", text, re.S)
    assert match, "README has no generated growth block"
    return match.group(1)


def _cells(block: str, label: str) -> list[str]:
    row = next(line for line in block.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_readme_growth_block_is_the_committed_json():
    """Read back independently: ratios recomputed from the measured seconds and MB, efficiency and projection."""
    data = json.loads(GROWTH.read_text())
    block = _block(readme.README.read_text())
    assert block == growth_readme.growth_section(readme.RESULTS) + "\n"
    for key, label in growth_readme.STEPS:
        g = data["growth"][key]
        cells = _cells(block, label)
        assert cells[1] == f"{g['images'][0]} -> {g['images'][1]}"
        assert float(cells[2].split()[0]) == pytest.approx(g["seconds"][1] / g["seconds"][0], abs=0.005)
        assert float(cells[3].split()[0]) == pytest.approx(g["peak_rss_mb"][1] / g["peak_rss_mb"][0], abs=0.005)
    efficiency = data["parallel"]["seconds"][0] / data["parallel"]["seconds"][1] / 2
    assert f"**{efficiency:.3f}**" in block
    rows = [line for line in block.splitlines() if re.match(r"\| [\d,]+ \| \d+ x \d+ \|", line)]
    assert len(rows) == len(data["projection"]["rows"])
    for line, row in zip(rows, data["projection"]["rows"], strict=True):
        assert float(line.split("|")[4].split()[0]) == pytest.approx(row["hours"], rel=0.006)


def _with_shares(data: dict, share: float) -> dict:
    data = copy.deepcopy(data)
    for g in data["growth"].values():
        g["other_cpu_share"] = [share, share]
    data["parallel"]["other_cpu_share"] = [share, share]
    data["parallel"]["load_average_1min"] = [1.4, 1.4]  # the benchmark's own children: not a reason to say busy
    return data


def test_idle_is_read_from_other_processes_cpu_not_the_load_average():
    data = json.loads(GROWTH.read_text())
    assert "idle (< 5%): yes" in growth_readme.conditions(_with_shares(data, 0.01))
    assert "idle (< 5%): **no**" in growth_readme.conditions(_with_shares(data, 0.2))
    without = copy.deepcopy(data)
    for g in without["growth"].values():
        g.pop("other_cpu_share", None)
    without["parallel"].pop("other_cpu_share", None)
    assert "cannot say whether the machine was idle" in growth_readme.conditions(without)
    assert "machine idle: not recorded" in growth_readme.parallel_text(without)


def test_inference_memory_verdict_follows_the_16x_point():
    """Levelled, settling (per-image growth falling, as in a quick run under load: 896, 988, 1074 MB at 32, 128,
    512 images) or a leak (the same MB per image again)."""
    data = copy.deepcopy(json.loads(GROWTH.read_text()))
    inference = data["growth"]["inference"]
    inference.update(images=[32, 128], peak_rss_mb=[896.0, 988.0], images_16x=512)
    for rss16, verdict in ((1000.0, "levelled off"), (1074.0, "fell from 0.96 to 0.22"),
                           (988.0 + 0.9 * 384, "a leak to find")):
        inference["peak_rss_mb_16x"] = rss16
        assert verdict in growth_readme.inference_memory(data), rss16


def test_check_fails_when_growth_json_changes(tmp_path):
    data = json.loads(GROWTH.read_text())
    data["parallel"]["seconds"][1] *= 1.2
    data["parallel"]["parallel_efficiency"] = data["parallel"]["seconds"][0] / data["parallel"]["seconds"][1] / 2
    for other in readme.RESULTS.glob("*.json"):
        (tmp_path / other.name).write_text(other.read_text())
    (tmp_path / "growth.json").write_text(json.dumps(data))
    assert readme.main(["--check", "--results", str(tmp_path)]) == 1
    assert readme.main(["--check"]) == 0
