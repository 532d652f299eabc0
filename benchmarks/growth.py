"""Growth: wall time and peak memory of preprocess, radiomics and inference at 1x and 4x images, preprocess
parallel efficiency at 1 and 2 workers, and projected wall times of the thesis' 1,528-image study and of a
100,000-image archive on a cluster of N GPU and M CPU nodes, from the per-image costs measured here.

Each measurement runs in its own child process (`--child`), so its peak RSS (ru_maxrss) is its own and nothing
is cached between runs. Inputs: the 8 real CBIS-DDSM DICOMs copied under new patient ids (preprocess, full
profile: 1152x896 + hires at 0.1 mm), the hires copies preprocess wrote (radiomics features, one worker), and
demo-size 16-bit PNGs (End2End demo architecture, untrained weights: the cost does not depend on them).

Targets (issue 14): 4x images cost at most 4.4x the time and 1.15x the peak memory of 1x for each CPU step;
2-worker preprocess parallel efficiency >= 0.85 on an idle machine. Both workers of the efficiency run are
single-threaded (OpenCV at one thread, as in the step's pool), so the 1-worker reference uses one core. Every
measurement records the share of the machine's CPU that OTHER processes used meanwhile (benchmarks/other_cpu.py;
the load average, kept beside it, counts the benchmark's own children): the run is `idle` when that share stayed
under 5% in every measurement; on a loaded machine the efficiency is not a scaling figure.
Inference peak RSS is also measured at 16x: it levels off (tf.data buffers and the allocator fill during the first
batches), which tells a warm-up from memory that grows with the images.

GPU costs cannot be measured here (no GPU): they come from benchmarks/results/pipeline_walltime.json (FLOPs
counted from the layer shapes at an assumed sustained V100 rate) and are marked as such.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
import other_cpu

NAME = "growth"
TIME_RATIO_MAX, MEMORY_RATIO_MAX, EFFICIENCY_MIN = 4.4, 1.15, 0.85
THESIS_IMAGES, ARCHIVE_IMAGES = 1528, 100_000
# Cluster shapes projected: (GPU nodes, GPUs per node = the `gpus` parameter, CPU nodes); a CPU node has
# CPU_NODE_CORES cores for the sharded steps.
CLUSTERS = [(1, 1, 1), (2, 1, 4), (2, 4, 8), (2, 8, 16)]
CPU_NODE_CORES = 8
# Assumed (not measured here: no GPU): the fraction of linear speed-up MirroredStrategy keeps over K GPUs.
MIRRORED_EFFICIENCY = 0.9


def main() -> int:
    p = _common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--child", help=argparse_hidden())
    p.add_argument("--args", help=argparse_hidden())
    p.add_argument("--images", type=int, help="1x image count (default 16, quick 8); 4x is four times that")
    args = p.parse_args()
    if args.child:
        print("CHILD " + json.dumps(CHILDREN[args.child](**json.loads(args.args))))
        return 0
    started = _common.machine()
    n = args.images or (8 if args.quick else 16)
    with tempfile.TemporaryDirectory(prefix="bench-growth-") as tmp:
        root = Path(tmp)
        from preprocess_throughput import replicate

        for k in (1, 4):  # dicom/ and cohort.csv under root/<k>x/
            replicate(_common.real_dicoms(), root / f"{k}x" / "dicom", k * n)
        steps = {}
        steps["preprocess"] = [child("preprocess", input=str(root / f"{k}x" / "dicom"), out=str(root / f"pre-{k}x"),
                                     cohort=str(root / f"{k}x" / "cohort.csv"), workers=1) for k in (1, 4)]
        # 1x: the eight distinct real images once; 4x: the same eight four times (the same mix of views and sizes).
        steps["radiomics"] = [child("radiomics", folder=str(root / "pre-1x"), images=k * 8) for k in (1, 4)]
        inference_images = 4 * n
        steps["inference"] = [child("inference", folder=str(root / "png"), images=k * inference_images)
                              for k in (1, 4)]
        plateau = child("inference", folder=str(root / "png"), images=16 * inference_images)
        parallel = [child("preprocess", input=str(root / "4x" / "dicom"), out=str(root / f"par-{w}"),
                          cohort=str(root / "4x" / "cohort.csv"), workers=w) for w in (1, 2)]
        startup = child("startup", folder=str(root / "junk"), cohort=str(root / "4x" / "cohort.csv"))
    growth = {}
    for step, (one, four) in steps.items():
        growth[step] = {
            "images": [one["images"], four["images"]],
            "seconds": [one["seconds"], four["seconds"]],
            "peak_rss_mb": [one["peak_rss_mb"], four["peak_rss_mb"]],
            "time_ratio": four["seconds"] / one["seconds"],
            "memory_ratio": four["peak_rss_mb"] / one["peak_rss_mb"],
            "s_per_image_4x": four["seconds"] / four["images"],
            "load_average_1min": [one["load_before"], four["load_before"]],
            "other_cpu_share": [one["other_cpu_share"], four["other_cpu_share"]],
        }
        if step != "inference":  # the targets are for the CPU steps
            growth[step]["meets_time_target"] = growth[step]["time_ratio"] <= TIME_RATIO_MAX
            growth[step]["meets_memory_target"] = growth[step]["memory_ratio"] <= MEMORY_RATIO_MAX
    growth["inference"].update(images_16x=plateau["images"], peak_rss_mb_16x=plateau["peak_rss_mb"],
                               other_cpu_share_16x=plateau["other_cpu_share"])
    one, two = parallel
    measurements = [*(m for pair in steps.values() for m in pair), plateau, one, two, startup]
    efficiency = {
        "images": one["images"], "seconds": [one["seconds"], two["seconds"]],
        "images_per_s": [one["images"] / one["seconds"], two["images"] / two["seconds"]],
        "parallel_efficiency": one["seconds"] / two["seconds"] / 2,
        # The pool's fixed cost (spawning 2 workers that import OpenCV, pydicom and pandas), measured on 2 non-DICOM
        # files: what the efficiency would be on a batch large enough to amortise it.
        "pool_startup_s": startup["seconds"],
        "parallel_efficiency_after_startup": one["seconds"] / max(1e-9, two["seconds"] - startup["seconds"]) / 2,
        "load_average_1min": [one["load_before"], two["load_before"]],
        "other_cpu_share": [one["other_cpu_share"], two["other_cpu_share"]],
        # Idle: other processes under 5% of the machine during every measurement of the run (not the load average,
        # which counts this benchmark's own previous children).
        "idle": other_cpu.idle(measurements),
        "other_cpu_share_max": max(m["other_cpu_share"] for m in measurements),
        "meets_target_if_idle": one["seconds"] / two["seconds"] / 2 >= EFFICIENCY_MIN,
    }
    projection = project(growth)
    _common.table(f"growth: 1x vs 4x images (1-min load average at start {started['load_average_1min']})",
                  [{"step": s, "images": f"{g['images'][0]} -> {g['images'][1]}", "s 1x": g["seconds"][0],
                    "s 4x": g["seconds"][1], "time x": g["time_ratio"], "MB 1x": g["peak_rss_mb"][0],
                    "MB 4x": g["peak_rss_mb"][1], "memory x": g["memory_ratio"]} for s, g in growth.items()],
                  ["step", "images", "s 1x", "s 4x", "time x", "MB 1x", "MB 4x", "memory x"])
    _common.table("preprocess parallel efficiency (both single-threaded per worker)",
                  [{"workers": w, "images/s": r, "load": la, "other CPU": o} for w, r, la, o in
                   zip((1, 2), efficiency["images_per_s"], efficiency["load_average_1min"],
                       efficiency["other_cpu_share"], strict=True)]
                  + [{"workers": "efficiency", "images/s": efficiency["parallel_efficiency"]},
                     {"workers": "pool start-up s", "images/s": efficiency["pool_startup_s"]},
                     {"workers": "efficiency after start-up",
                      "images/s": efficiency["parallel_efficiency_after_startup"]}],
                  ["workers", "images/s", "load", "other CPU"])
    _common.table("projected wall hours (critical path; GPU figures from FLOP counts, not measured)",
                  [{"images": r["images"], "GPU nodes": r["gpu_nodes"], "GPUs/node": r["gpus_per_node"],
                    "CPU nodes": r["cpu_nodes"], "hours": r["hours"], "CPU part": r["cpu_hours"],
                    "GPU part": r["gpu_hours"]} for r in projection["rows"]],
                  ["images", "GPU nodes", "GPUs/node", "CPU nodes", "hours", "CPU part", "GPU part"])
    _common.write_result(NAME, args.results, args.quick, started, growth=growth, parallel=efficiency,
                         projection=projection,
                         targets={"time_ratio_max": TIME_RATIO_MAX, "memory_ratio_max": MEMORY_RATIO_MAX,
                                  "parallel_efficiency_min_idle": EFFICIENCY_MIN})
    return 0


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


def child(kind: str, **kwargs) -> dict:
    """One measurement in its own process, with the load average before it and what OTHER processes used during it."""
    load = round(os.getloadavg()[0], 2)
    command = [sys.executable, __file__, "--child", kind, "--args", json.dumps(kwargs)]
    with other_cpu.measured() as cpu:
        result = subprocess.run(command, capture_output=True, text=True, cwd=_common.REPO_ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("CHILD ")]
    if result.returncode != 0 or not lines:
        sys.exit(f"growth: child {kind} failed:\n{result.stderr[-3000:]}")
    return {**json.loads(lines[-1][6:]), "load_before": load, "other_cpu_share": round(cpu["other_cpu_share"], 4),
            "other_cpu_s": round(cpu["other_cpu_s"], 2), "own_cpu_s": round(cpu["own_cpu_s"], 2)}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _preprocess(input: str, out: str, cohort: str, workers: int) -> dict:
    import cv2
    from helpers import finish_step

    from common.preprocess import preprocess_folder
    from common.profile import load_profile

    cv2.setNumThreads(1)  # one core per worker, also for the 1-worker reference
    began = time.perf_counter()
    counts = preprocess_folder(input, cohort, out, load_profile("full"), workers=workers)
    finish_step(Path(out), "preprocess")
    return {"images": counts["files"], "seconds": time.perf_counter() - began, "peak_rss_mb": _peak_mb()}


def _radiomics(folder: str, images: int) -> dict:
    import cv2
    import pandas as pd

    from common.radiomics import batch

    cv2.setNumThreads(1)
    table = pd.read_csv(Path(folder) / "images.csv", dtype={"image_id": str, "patient_id": str})
    rows = pd.concat([table] * (images // len(table) + 1), ignore_index=True).head(images)
    began = time.perf_counter()
    results = list(batch.run_all(batch.plan(rows, Path(folder), None), workers=1))
    assert not any("reason" in r for r in results), [r["reason"] for r in results if "reason" in r][:3]
    return {"images": images, "seconds": time.perf_counter() - began, "peak_rss_mb": _peak_mb()}


def _inference(folder: str, images: int) -> dict:
    import cv2
    import numpy as np
    import pandas as pd

    from common.inference import predict_scores
    from common.model import Architecture, build_end2end
    from common.model_folder import Preprocessing
    from common.profile import load_profile

    profile = load_profile("demo")
    height, width = profile.image.height, profile.image.width
    paths = []
    rng = np.random.default_rng(0)
    for index in range(images):
        path = Path(folder) / f"{index}.png"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), rng.integers(0, 65535, (height, width), dtype=np.uint16))
        paths.append(str(path))
    model = build_end2end(Architecture.from_profile(profile), dropout=0.0, weight_decay=0.0)
    frame = pd.DataFrame({"path": paths})
    prep = Preprocessing(40.0, height, width, "benchmark")
    began = time.perf_counter()
    scores = predict_scores(model, frame, prep, batch_size=32, tta=False, progress=False)
    assert len(scores) == images
    return {"images": images, "seconds": time.perf_counter() - began, "peak_rss_mb": _peak_mb()}


def _startup(folder: str, cohort: str) -> dict:
    from common.artifacts import UnusableInput
    from common.preprocess import preprocess_folder
    from common.profile import load_profile

    for index in range(2):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"not-dicom-{index}.dcm").write_bytes(b"not a DICOM file")
    began = time.perf_counter()
    try:
        preprocess_folder(folder, cohort, Path(folder) / "out", load_profile("full"), workers=2)
    except UnusableInput:
        pass  # expected: nothing usable; only the pool's cost was wanted
    return {"images": 0, "seconds": time.perf_counter() - began, "peak_rss_mb": _peak_mb()}


CHILDREN = {"preprocess": _preprocess, "radiomics": _radiomics, "inference": _inference, "startup": _startup}


def project(growth: dict) -> dict:
    """Critical path: sharded preprocess on the CPU nodes -> baseline inference on one GPU -> the two fine-tuning
    chains (one GPU pod each, in parallel when there are two GPU nodes) alongside sharded radiomics."""
    walltime = _common.RESULTS_DIR / "pipeline_walltime.json"
    gpu_tasks = json.loads(walltime.read_text())["projection"]["tasks"] if walltime.is_file() else []
    per_image_gpu_h = {t["task"]: t["hours"] / THESIS_IMAGES for t in gpu_tasks if t["device"] == "gpu" and t["hours"]}
    infer_h = per_image_gpu_h.get("infer-ab-hospital", 0.0)
    chains = [per_image_gpu_h.get(f"finetune{c}-stage1", 0.0) + per_image_gpu_h.get(f"finetune{c}-stage2", 0.0)
              for c in (1, 2)]
    core_s = {step: growth[step]["s_per_image_4x"] for step in ("preprocess", "radiomics")}
    rows = []
    for images in (THESIS_IMAGES, ARCHIVE_IMAGES):
        for gpu_nodes, gpus, cpu_nodes in CLUSTERS:
            cores = cpu_nodes * CPU_NODE_CORES
            speed = gpus * (MIRRORED_EFFICIENCY if gpus > 1 else 1.0)
            preprocess_h = images * core_s["preprocess"] / cores / 3600
            radiomics_h = images * core_s["radiomics"] / cores / 3600
            finetune_h = (sum(chains) if gpu_nodes == 1 else max(chains)) * images / speed
            gpu_h = images * infer_h + finetune_h  # baseline-infer runs on one GPU (not mirrored)
            hours = preprocess_h + images * infer_h + max(finetune_h, radiomics_h)
            rows.append({"images": images, "gpu_nodes": gpu_nodes, "gpus_per_node": gpus, "cpu_nodes": cpu_nodes,
                         "hours": hours,
                         "cpu_hours": preprocess_h + radiomics_h, "gpu_hours": gpu_h})
    return {
        "rows": rows,
        "basis": {
            "cpu_core_s_per_image": core_s,
            "cpu_node_cores": CPU_NODE_CORES,
            "gpu_hours_per_image": {"inference": infer_h, "finetune_chains": chains},
            "gpu_source": "pipeline_walltime.json: FLOPs from layer shapes at an assumed sustained V100 rate "
                          "(not measured: no GPU here); epochs at the profile maximum, so an upper bound",
            "notes": "fine-tuning epochs are fixed, so GPU time grows linearly with the images; two fine-tuning "
                     "chains run in parallel from 2 GPU nodes on; more GPU nodes do not shorten one chain "
                     "unless a pod gets several GPUs (parameter gpus; MirroredStrategy efficiency assumed "
                     f"{MIRRORED_EFFICIENCY}; baseline-infer stays on one GPU); CPU steps shard over all CPU "
                     "cores (measured per-image costs, this machine, under its load)",
        },
    }


if __name__ == "__main__":
    sys.exit(main())
