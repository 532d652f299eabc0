"""The README's figures are the committed result files' figures (generated, never hand-copied)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from common.report import readme

ROOT = Path(__file__).resolve().parents[1]


def _block(text: str, name: str) -> str:
    match = re.search(rf"<!-- generated: {name} -->\n(.*?)<!-- end generated: {name} -->", text, re.S)
    assert match, f"README has no generated block {name}"
    return match.group(1)


def test_readme_agrees_with_the_committed_result_files():
    assert readme.main(["--check"]) == 0, "README.md is stale: run python -m common.report.readme"


def test_demo_table_numbers_are_the_summary_json_numbers():
    """Read back independently: every AUC and CI in the README table is the committed summary's, to 3 places."""
    summary = json.loads(readme.DEMO_SUMMARY.read_text())
    table = _block(readme.README.read_text(), "demo-table")
    for key, label in readme.DEMO_ROWS:
        model = summary["models"][key]
        row = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        lo, hi = model["auc_ci95"]
        assert cells[3] == f"{round(model['auc'], 3):.3f} ({round(lo, 3):.3f}-{round(hi, 3):.3f})", key
        assert float(cells[4]) == pytest.approx(model["sensitivity"], abs=5e-4 + 1e-9)
        assert float(cells[5]) == pytest.approx(model["specificity"], abs=5e-4 + 1e-9)
        assert cells[2] == f"{model['n']} ({model['n_pos']})"


def test_preprocess_row_states_the_json_headline():
    data = json.loads((readme.RESULTS / "preprocess_throughput.json").read_text())
    table = _block(readme.README.read_text(), "performance-table")
    row = next(line for line in table.splitlines() if line.startswith("| preprocess core-seconds"))
    assert f"| {data['summary']['core_s_vs_isolated']:.2f}x |" in row
    assert ("(yes)" if data["summary"]["meets_isolated_target"] else "(**no**)") in row


def test_check_fails_when_a_result_file_changes(tmp_path):
    summary = json.loads(readme.DEMO_SUMMARY.read_text())
    changed = copy.deepcopy(summary)
    changed["models"]["baseline"]["auc"] = summary["models"]["baseline"]["auc"] - 0.05
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(changed))
    assert readme.main(["--check", "--summary", str(path)]) == 1
    assert readme.main(["--check", "--summary", str(readme.DEMO_SUMMARY)]) == 0


def _model(auc, sensitivity=0.6, specificity=0.7):
    return {"auc": auc, "auc_ci95": [auc - 0.1, auc + 0.1], "sensitivity": sensitivity, "specificity": specificity,
            "level": "image", "n": 128, "n_pos": 32}


def test_findings_follow_the_numbers():
    from common.report.findings import findings

    models = {"a-film": _model(0.80), "a-ffdm": _model(0.70), "ab-ffdm": _model(0.85), "a-hospital": _model(0.60),
              "baseline": _model(0.70, 0.6, 0.7), "baseline+radiomics": _model(0.72, 0.75, 0.5),
              "finetune-config1": _model(0.78), "finetune-config2": _model(0.69)}
    held = {f.key: f.holds for f in findings({"models": models})}
    assert held == {"a-in-domain": True, "a-loses-ffdm": True, "a-loses-hospital": True, "ab-beats-a-ffdm": True,
                    "baseline-drops": True, "config1-beats-baseline": True, "config2-beats-baseline": False,
                    "radiomics-differs": True}
    models["a-film"], models["a-ffdm"] = _model(0.74), _model(0.76)  # below the in-domain bar, A gains on ffdm
    del models["finetune-config1"]
    held = {f.key: f.holds for f in findings({"models": models})}
    assert held["a-in-domain"] is False and held["a-loses-ffdm"] is False
    assert held["config1-beats-baseline"] is None  # a missing row is "not computable", never a pass
