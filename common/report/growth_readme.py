"""The README's growth and scale-out figures, from benchmarks/results/growth.json (the `growth` generated block).

Whether the machine was idle is read from what other processes used during each measurement (other_cpu_share,
benchmarks/other_cpu.py), never from the load average: that counts the benchmark's own children. A result file
written before that was recorded says so instead of claiming either way.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

STEPS = (
    ("preprocess", "preprocess (full profile, real CBIS-DDSM files)"),
    ("radiomics", "radiomics features (0.1 mm hires copies)"),
    ("inference", "inference (demo architecture, batch 32)"),
)
QUIET_SHARE = 0.05  # as benchmarks/other_cpu.py
LEVELLED = 1.05  # 16x peak RSS within 5% of 4x: the memory has stopped growing with the images
SETTLING = 0.5  # MB added per image from 4x to 16x at most half those from 1x to 4x: a warm-up, not a leak


def _g(value: float) -> str:
    """Three significant digits, no exponent for the magnitudes here."""
    return f"{value:.3g}" if abs(value) >= 1e-3 else f"{value:.2g}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def _shares(data: dict[str, Any]) -> list[float] | None:
    shares = [s for g in data["growth"].values() for s in g.get("other_cpu_share", [None, None])]
    shares += data["parallel"].get("other_cpu_share", [None, None])
    return None if any(s is None for s in shares) else shares


def conditions(data: dict[str, Any]) -> str:
    machine, parallel = data["machine"], data["parallel"]
    loads = [la for g in data["growth"].values() for la in g["load_average_1min"]] + parallel["load_average_1min"]
    loads += [machine["load_average_1min"], machine.get("load_average_1min_end", machine["load_average_1min"])]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(data["finished_unixtime"]))
    text = (f"Measured {when} (`benchmarks/growth.py{' --quick' if data['quick'] else ''}`, {machine['cpus']} cores); "
            f"1-min load average {min(loads):.2f}-{max(loads):.2f}, which includes the benchmark's own children. ")
    shares = _shares(data)
    if shares is None:
        return text + ("What other processes used was not recorded in this run (it predates that measurement), so "
                       "the file cannot say whether the machine was idle.")
    idle = max(shares) < QUIET_SHARE
    return text + (f"Other processes used at most {max(shares):.1%} of the machine's CPU during any measurement: "
                   f"idle (< {QUIET_SHARE:.0%}): {_yes(idle)}.")


def growth_table(data: dict[str, Any]) -> str:
    targets = data["targets"]
    lines = ["| step (one worker) | images 1x -> 4x | time 4x/1x | peak RSS 4x/1x | target (met) |",
             "|---|---|---|---|---|"]
    for key, label in STEPS:
        g = data["growth"][key]
        (s1, s4), (m1, m4) = g["seconds"], g["peak_rss_mb"]
        target = "-" if "meets_time_target" not in g else (
            f"<= {targets['time_ratio_max']:g} / <= {targets['memory_ratio_max']:g} "
            f"({_yes(g['meets_time_target'])} / {_yes(g['meets_memory_target'])})")
        lines.append(f"| {label} | {g['images'][0]} -> {g['images'][1]} | {s4 / s1:.2f} ({_g(s1)} -> {_g(s4)} s) "
                     f"| {m4 / m1:.2f} ({m1:.0f} -> {m4:.0f} MB) | {target} |")
    return "\n".join(lines)


def inference_memory(data: dict[str, Any]) -> str:
    """Warm-up or growth: a leak keeps adding the same MB per image; a warm-up's added MB per image fall away."""
    g = data["growth"]["inference"]
    if "peak_rss_mb_16x" not in g:
        return ("Inference (a GPU step; the memory target is for the CPU steps) was not measured at 16x images in "
                "this run, so this file cannot tell warm-up from growth; its scores are one float per image.")
    (n1, n4), n16 = g["images"], g["images_16x"]
    (m1, m4), m16 = g["peak_rss_mb"], g["peak_rss_mb_16x"]
    early, late = (m4 - m1) / (n4 - n1), (m16 - m4) / (n16 - n4)
    if m16 <= LEVELLED * m4:
        verdict = "it has levelled off"
    elif late <= SETTLING * early:
        verdict = (f"still settling, but the MB added per image fell from {early:.2f} to {late:.2f}, which a "
                   "per-image leak would not do")
    else:
        verdict = (f"it keeps adding about {late:.2f} MB per image ({early:.2f} before): memory held per image, "
                   "a leak to find")
    cause = ("; consistent with tf.data's AUTOTUNE prefetch and parallel-map buffers (a demo batch is 25 MB of "
             "float32 input) and the allocator filling over the first batches, while the scores kept are one float "
             "per image and nothing is cached"
             if not verdict.startswith("it keeps") else "")
    return (f"Inference peak RSS (a GPU step; the memory target is for the CPU steps): {m1:.0f} MB at {n1} images, "
            f"{m4:.0f} MB at {n4}, {m16:.0f} MB at {n16}: {verdict}{cause}.")


def parallel_text(data: dict[str, Any]) -> str:
    p, target = data["parallel"], data["targets"]["parallel_efficiency_min_idle"]
    shares = _shares(data)
    idle = "not recorded" if shares is None else _yes(max(shares) < QUIET_SHARE)
    return (f"2-worker preprocess parallel efficiency ({p['images']} files, both workers single-threaded): "
            f"**{p['parallel_efficiency']:.3f}** (target >= {target:g}: {_yes(p['parallel_efficiency'] >= target)}; "
            f"machine idle: {idle}), {p['parallel_efficiency_after_startup']:.3f} after subtracting the process "
            f"pool's start-up ({p['pool_startup_s']:.2f} s: spawned workers import OpenCV, pydicom and pandas; "
            "sharded pods pay it once per shard).")


def projection_table(data: dict[str, Any]) -> str:
    projection = data["projection"]
    basis = projection["basis"]
    core_s = basis["cpu_core_s_per_image"]
    lines = [f"Projected wall time (critical path; CPU per-image costs measured above: "
             f"{core_s['preprocess']:.3f} core-s preprocess, {core_s['radiomics']:.3f} core-s radiomics, "
             f"{basis['cpu_node_cores']}-core CPU nodes; GPU costs from FLOP counts at an assumed sustained V100 "
             "rate, not measured; see `projection.basis` in the JSON):", "",
             "| images | GPU nodes x GPUs | CPU nodes | hours (CPU part / GPU part) |", "|---|---|---|---|"]
    for r in projection["rows"]:
        lines.append(f"| {r['images']:,} | {r['gpu_nodes']} x {r['gpus_per_node']} | {r['cpu_nodes']} "
                     f"| {_g(r['hours'])} ({_g(r['cpu_hours'])} / {_g(r['gpu_hours'])}) |")
    share = max(r["cpu_hours"] / r["hours"] for r in projection["rows"] if r["hours"])
    lines += ["", "The two fine-tuning configurations are independent chains, so GPU nodes beyond two only help "
              f"through more GPUs per pod (`-p gpus`); the sharded CPU steps are at most {share:.1%} of the "
              "projected wall time."]
    return "\n".join(lines)


def growth_section(results: Path) -> str:
    path = results / "growth.json"
    if not path.is_file():
        return "Not measured: run `python benchmarks/growth.py`."
    data = json.loads(path.read_text())
    return "\n\n".join([conditions(data), growth_table(data), inference_memory(data), parallel_text(data),
                        projection_table(data)])
