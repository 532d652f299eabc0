"""Whole pipeline: wall time of a `mammo pipeline run` by task and step, and a projection for the thesis cohort.

The breakdown reads <workdir>/timings.json (wall seconds per task, written by the local runner), elapsed.json
(the run's own wall time: tasks run side by side, so it is less than their sum; shares are of the sum),
cpu_seconds.json (core-seconds per task: user + system time of the task and its worker processes) and each
task's _SUCCESS.json (seconds inside the step body); the difference is the cost of starting a `mammo`
process (interpreter, TensorFlow import, model loading). --run first runs the demo into --workdir.

Machine-independent cost: the TF float32 matmul peak is measured before and after the run (their mean is
the run's reference), and the wall time is stated in units of it: wall seconds x peak GFLOP/s = the
TFLOP the machine could have done at its peak in that time ("peak-TFLOP"). A machine twice as fast, or
half as loaded, shows half the wall time and the same peak-TFLOP; without --run the peak is measured
now, after the run, which is only a same-run figure when the machine's load has not changed.

The projection is for the thesis' real-data run (the `real` mode of common.pipeline with a published
checkpoint, full profile) on its 1,528-image cohort with one GPU: GPU work from FLOPs counted on the
full-size End2End model (benchmarks/model_cost.py) at an assumed sustained GPU rate, epochs at the
profile's maximum (early stopping can only shorten them); CPU steps from the per-image costs measured by
preprocess_throughput and radiomics_speed on this machine, when their results exist.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import _common
from model_cost import forward_flops, layer_costs, memory_estimate, training_flops

from common.runner import PRELOADED

NAME = "pipeline_walltime"
THESIS_IMAGES = 1528
GPU_NAME = "NVIDIA V100"
GPU_TFLOPS = 14.0  # V100 float32 peak (SXM2 15.7, PCIe 14); the figure assumed
GPU_UTILISATION = 0.5  # sustained fraction of peak for VGG16-size convolutions in float32
GPU_MEMORY_GIB = 16.0
MATMUL_SIZE = 2048


def main() -> int:
    p = _common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=_common.REPO_ROOT / "work" / "demo",
                   help="work directory of a finished `mammo pipeline run` (default: %(default)s, make run's)")
    p.add_argument("--run", action="store_true", help="run `mammo pipeline run --profile PROFILE` there first")
    p.add_argument("--profile", default="demo", help="profile for --run (default demo)")
    p.add_argument("--images", type=int, default=THESIS_IMAGES, help="cohort size to project (default 1528)")
    p.add_argument("--gpu-tflops", type=float, default=GPU_TFLOPS, help="GPU float32 peak, TFLOP/s (default 14)")
    p.add_argument("--gpu-utilisation", type=float, default=GPU_UTILISATION,
                   help="sustained fraction of the GPU peak (default 0.5)")
    args = p.parse_args()
    started = _common.machine()

    repeats = 2 if args.quick else 3
    peaks = [_common.matmul_peak(MATMUL_SIZE, repeats)] if args.run else []
    run_seconds = None
    if args.run:
        from helpers import mammo_command

        command = mammo_command("pipeline run", profile=args.profile, workdir=args.workdir)
        began = time.perf_counter()
        if subprocess.run(command, cwd=_common.REPO_ROOT).returncode != 0:
            print(f"pipeline_walltime: `{' '.join(command[2:])}` failed; breakdown of what finished follows",
                  file=sys.stderr)
        run_seconds = time.perf_counter() - began
    peaks.append(_common.matmul_peak(MATMUL_SIZE, repeats))
    peak = sum(p["tensorflow_gflops"] for p in peaks) / len(peaks)
    breakdown = read_run(args.workdir)
    if breakdown is None:
        print(f"no {args.workdir}/timings.json: run `mammo pipeline run --profile demo --workdir {args.workdir}` "
              "(or pass --run) for the breakdown; the projection follows", file=sys.stderr)
    else:
        breakdown["measured_wall_s"] = run_seconds
        _common.table(f"pipeline run in {args.workdir}: wall seconds by task", breakdown["tasks"],
                      ["task", "step", "wall_s", "core_s", "step_body_s", "startup_s", "share"])
        _common.table("by step", breakdown["steps"], ["step", "tasks", "wall_s", "core_s", "startup_s", "share"])
        wall = breakdown["total_wall_s"]
        print(f"pipeline wall time {wall:.0f} s = {wall / 60:.1f} min ({breakdown['jobs'] or '?'} tasks at once; the "
              f"tasks' own times add up to {breakdown['task_wall_sum_s']:.0f} s), "
              f"{breakdown['total_core_s']:.0f} core-seconds; "
              f"TF float32 matmul peak {peak:.0f} GFLOP/s ({'before/after the run' if args.run else 'measured now'})"
              f" -> {wall * peak / 1000:.0f} peak-TFLOP\n")

    projection = project(args.images, args.gpu_tflops * 1e12 * args.gpu_utilisation, args.results)
    _common.table(
        f"projected full-profile run, {args.images} images, one {GPU_NAME} at {args.gpu_tflops:g} TFLOP/s x "
        f"{args.gpu_utilisation:g} sustained (epochs at their maximum: an upper bound)",
        projection["tasks"], ["task", "device", "pflop", "hours", "basis"],
    )
    print(f"projected total: {projection['total_hours']:.1f} h "
          f"(GPU {projection['gpu_hours']:.1f} h, CPU steps {projection['cpu_hours']:.1f} h)\n")
    wall = None if breakdown is None else breakdown["total_wall_s"]
    summary = {
        "demo_wall_s": wall,
        "demo_core_s": None if breakdown is None else breakdown["total_core_s"],
        "tf_matmul_peak_gflops": peak,
        "peak_measured": "before and after the run" if args.run else "after the run, when this script ran",
        "demo_wall_peak_tflop": None if wall is None else wall * peak / 1000,
        "demo_startup_share": None if breakdown is None else
        sum(r["startup_s"] or 0.0 for r in breakdown["tasks"]) / breakdown["task_wall_sum_s"],
        "jobs": None if breakdown is None else breakdown["jobs"],
        "projected_gpu_hours": projection["gpu_hours"],
        "projected_cpu_hours": projection["cpu_hours"],
        "projected_total_hours": projection["total_hours"],
    }
    _common.write_result(
        NAME, args.results, args.quick, started, summary=summary,
        workdir=str(args.workdir), breakdown=breakdown, matmul_peak=peaks,
        assumptions={"gpu": GPU_NAME, "gpu_tflops_fp32": args.gpu_tflops, "gpu_utilisation": args.gpu_utilisation,
                     "gpu_memory_gib": GPU_MEMORY_GIB, "images": args.images,
                     "epochs": "profile maximum (early stopping stops earlier)",
                     "mixed_precision": "not credited: float32 rate assumed"},
        projection=projection,
    )
    return 0


def read_run(workdir: Path) -> dict | None:
    """Per-task wall and step-body seconds, and their sums per step; None when the folder holds no run."""
    timings_path = workdir / "timings.json"
    if not timings_path.is_file():
        return None
    timings = json.loads(timings_path.read_text())
    cpu_path = workdir / "cpu_seconds.json"
    cpu = json.loads(cpu_path.read_text()) if cpu_path.is_file() else {}
    total = sum(timings.values()) or 1.0
    elapsed_path = workdir / "elapsed.json"
    elapsed = json.loads(elapsed_path.read_text()) if elapsed_path.is_file() else {}
    whole_run = elapsed.get("tasks") == len(timings)  # a resumed run's elapsed time covers only what it redid
    tasks = []
    for task, wall in timings.items():
        marker = workdir / task / "_SUCCESS.json"
        success = json.loads(marker.read_text()) if marker.is_file() else {}
        body = success.get("timings", {}).get("total_seconds")
        tasks.append({
            "task": task,
            "step": success.get("step", "?"),
            "wall_s": float(wall),
            "core_s": cpu.get(task),
            "step_body_s": body,
            "startup_s": None if body is None else max(0.0, float(wall) - float(body)),
            "share": float(wall) / total,
            "counts": success.get("counts", {}),
        })
    steps: dict[str, dict] = {}
    for row in tasks:
        entry = steps.setdefault(row["step"], {"step": row["step"], "tasks": 0, "wall_s": 0.0, "core_s": 0.0,
                                               "startup_s": 0.0})
        entry["tasks"] += 1
        entry["wall_s"] += row["wall_s"]
        entry["core_s"] += row["core_s"] or 0.0
        entry["startup_s"] += row["startup_s"] or 0.0
    for entry in steps.values():
        entry["share"] = entry["wall_s"] / total
    # The forked tasks' one shared import (common.preloaded) is charged to no task but counts for the run.
    shared = float(cpu.get(PRELOADED, 0.0))
    return {"total_wall_s": float(elapsed["seconds"]) if whole_run else total, "task_wall_sum_s": total,
            "jobs": elapsed.get("jobs", 1) if whole_run else None, "preloaded_core_s": shared,
            "total_core_s": sum(row["core_s"] or 0.0 for row in tasks) + shared, "tasks": tasks,
            "steps": sorted(steps.values(), key=lambda e: e["wall_s"], reverse=True)}


def model_flops() -> dict:
    """Per-image GFLOP of the full-profile End2End: forward, and a training step of each phase."""
    import keras

    from common.model import Architecture, build_end2end, set_phase
    from common.profile import load_profile

    profile = load_profile("full")
    model = build_end2end(Architecture.from_profile(profile), dropout=0.0, weight_decay=0.0)
    costs = layer_costs(model)
    training = {}
    for phase in ("stage1_config1", "stage1_config2", "stage2"):
        set_phase(model, phase)
        training[phase] = training_flops(layer_costs(model))
    batch = profile.training.batch_size
    memory = {"float32": memory_estimate(model, costs, batch, 4),
              "mixed_float16": memory_estimate(model, costs, batch, 2)}
    keras.backend.clear_session()
    return {"profile": profile, "forward": forward_flops(costs), "training": training, "memory": memory}


def project(images: int, gpu_flops_per_s: float, results: Path) -> dict:
    """Hours per task of the thesis' real-data DAG; GPU tasks from FLOPs, CPU tasks from measured per-image cost."""
    from common import pipeline

    counted = model_flops()
    profile = counted["profile"]
    train, validation = round(images * profile.split.train), round(images * profile.split.validation)
    tta = 4 if profile.training.flip_tta else 1
    score_all = images * tta * counted["forward"]
    plan = pipeline.tasks("real", "full", {"hospital_dicom": "dicom", "hospital_cohort": "cohort.csv",
                                           "checkpoint": "checkpoint.h5", "finetune_configs": [1, 2]})
    measured = _cpu_costs(results)
    rows = []
    for task in plan:
        row = {"task": task.name, "step": task.step, "device": "gpu" if task.resources.gpu else "cpu"}
        if task.step == "baseline-infer":
            flops, basis = score_all, f"{images} images x {tta} flips x forward"
        elif task.step in ("finetune-stage1", "finetune-stage2"):
            stage = "stage1" if task.step == "finetune-stage1" else "stage2"
            config = dict(task.args).get("--config", "1")
            phase = f"stage1_config{config}" if stage == "stage1" else "stage2"
            epochs = profile.training.phase(stage).epochs
            flops = epochs * (train * counted["training"][phase] + validation * counted["forward"])
            basis = f"{epochs} epochs x ({train} training + {validation} validation images)"
            if stage == "stage2":
                flops += score_all
                basis += f" + scoring {images} x {tta} flips"
        else:
            flops, basis = None, ""
        if flops is not None:
            row.update(pflop=flops / 1e15, hours=flops / gpu_flops_per_s / 3600, basis=basis)
        elif task.step in measured:
            seconds, source = measured[task.step]
            row.update(hours=images * seconds / 3600, basis=source)
        elif task.step in ("preprocess", "radiomics"):
            benchmark = "preprocess_throughput" if task.step == "preprocess" else "radiomics_speed"
            row.update(hours=None, basis=f"not measured: no {benchmark}.json in {results} yet")
        else:
            row.update(hours=None, basis="not measured (seconds: split, report)")
        rows.append(row)
    gpu_hours = sum(r["hours"] or 0.0 for r in rows if r["device"] == "gpu")
    cpu_hours = sum(r["hours"] or 0.0 for r in rows if r["device"] == "cpu")
    memory = counted["memory"]
    return {
        "per_image_gflop": {"forward": counted["forward"] / 1e9,
                            **{k: v / 1e9 for k, v in counted["training"].items()}},
        "split_images": {"train": train, "validation": validation, "all": images},
        "gpu_memory_per_training_batch_gib": {k: v["training_total_gib"] for k, v in memory.items()},
        "gpu_memory_fits": {k: v["training_total_gib"] < GPU_MEMORY_GIB for k, v in memory.items()},
        "gpu_feed_images_per_s_needed": {
            "inference": gpu_flops_per_s / counted["forward"],
            "stage2_training": gpu_flops_per_s / counted["training"]["stage2"],
        },
        "tasks": rows,
        "gpu_hours": gpu_hours,
        "cpu_hours": cpu_hours,
        "total_hours": gpu_hours + cpu_hours,
    }


def _cpu_costs(results: Path) -> dict[str, tuple[float, str]]:
    """Wall seconds per image on this machine (all cores) from the other benchmarks' JSON, where present."""
    costs = {}
    preprocess = results / "preprocess_throughput.json"
    if preprocess.is_file():
        data = json.loads(preprocess.read_text())
        best = max(data["runs"], key=lambda r: r["images_per_s"])
        costs["preprocess"] = (1 / best["images_per_s"],
                               f"preprocess_throughput: {best['images_per_s']:.2f} images/s, {best['workers']} "
                               f"workers, {data['profile']} profile, this machine")
    radiomics = results / "radiomics_speed.json"
    if radiomics.is_file():
        data = json.loads(radiomics.read_text())
        best = max(data["pool"], key=lambda r: r["images_per_s"])
        costs["radiomics"] = (1 / best["images_per_s"],
                              f"radiomics_speed: {best['images_per_s']:.2f} images/s, {best['workers']} workers, "
                              "features only (not the classifier search), this machine")
    return costs


if __name__ == "__main__":
    raise SystemExit(main())
