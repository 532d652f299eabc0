"""CNN inference: End2End images/s and achieved GFLOP/s against this machine's float32 matmul peak.

The model's FLOPs are counted from its layer shapes (benchmarks/model_cost.py); the peak is the best of
numpy's and TensorFlow's large square matmul, measured in the same run before and after the model
timings (the larger is the denominator, so load from other processes cannot flatter the ratio).
Scoring goes through the pipeline's own scorer (common.inference.make_scorer), with and without XLA.
The JSON also records what a GPU run of the profile needs: FLOPs per image for inference and for each
training phase, and memory per batch.
"""

from __future__ import annotations

import _common
from model_cost import forward_flops, layer_costs, memory_estimate, training_flops

NAME = "inference_flops"
TARGET_PEAK_FRACTION = 0.75
# Batch sizes tried per profile; full size is heavy (about 4 s per image forward on 2 cores).
BATCHES = {"full": (1, 2, 4, 8), "demo": (1, 8, 32, 64)}
QUICK_BATCHES = {"full": (1, 2), "demo": (8, 32)}
PHASES = ("pretrain", "stage1_config1", "stage1_config2", "stage2")


def main() -> int:
    p = _common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--profiles", nargs="+", default=["full", "demo"], help="profiles to time (default: full demo)")
    p.add_argument("--matmul-size", type=int, default=4096, help="side of the square matrices for the peak")
    args = p.parse_args()
    started = _common.machine()

    import keras

    from common.model import Architecture, build_end2end, set_phase
    from common.profile import load_profile

    repeats = 2 if args.quick else 3
    peak_before = _common.matmul_peak(args.matmul_size, repeats)
    rows, profiles = [], {}
    for name in args.profiles:
        profile = load_profile(name)
        keras.utils.set_random_seed(0)
        model = build_end2end(Architecture.from_profile(profile), dropout=0.0, weight_decay=0.0)
        costs = layer_costs(model)
        flops = forward_flops(costs)
        timings = []
        for batch in (QUICK_BATCHES if args.quick else BATCHES).get(name, (1, 8)):
            timings.append(_time_batch(model, batch, flops, repeats=1 if args.quick else 2, jit=False))
        best = max(timings, key=lambda t: t["images_per_s"])
        # XLA at the best batch size: does graph compilation beat TensorFlow's oneDNN kernels here?
        timings.append(_time_batch(model, best["batch_size"], flops, repeats=1 if args.quick else 2, jit=True))
        profiles[name] = {
            "input_shape": list(model.input_shape[1:]),
            "backbone_filters": list(Architecture.from_profile(profile).backbone_filters),
            "forward_gflop_per_image": flops / 1e9,
            "timings": timings,
            "gpu_plan": _gpu_plan(model, costs, profile, set_phase),
        }
        rows += [{"profile": name, **t} for t in timings]
        del model
        keras.backend.clear_session()
    peak_after = _common.matmul_peak(args.matmul_size, repeats)
    peak = max(peak_before["peak_gflops"], peak_after["peak_gflops"])
    for entry in profiles.values():
        for timing in entry["timings"]:
            timing["fraction_of_peak"] = timing["gflops"] / peak
        best = max(entry["timings"], key=lambda t: t["fraction_of_peak"])
        entry["best"] = {k: best[k] for k in ("batch_size", "xla", "images_per_s", "gflops", "fraction_of_peak")}
        entry["meets_target"] = best["fraction_of_peak"] >= TARGET_PEAK_FRACTION
    for row in rows:
        row["fraction_of_peak"] = row["gflops"] / peak

    _common.table(
        f"matmul peak (float32, {args.matmul_size}^2): {peak:.1f} GFLOP/s "
        f"(numpy {max(peak_before['numpy_gflops'], peak_after['numpy_gflops']):.1f}, "
        f"TensorFlow {max(peak_before['tensorflow_gflops'], peak_after['tensorflow_gflops']):.1f})",
        [{"profile": n, "input": "x".join(map(str, e["input_shape"][:2])), "GFLOP/image": e["forward_gflop_per_image"],
          "best batch": e["best"]["batch_size"], "XLA": e["best"]["xla"], "images/s": e["best"]["images_per_s"],
          "of peak": e["best"]["fraction_of_peak"], f">= {TARGET_PEAK_FRACTION}": e["meets_target"]}
         for n, e in profiles.items()],
        ["profile", "input", "GFLOP/image", "best batch", "XLA", "images/s", "of peak", f">= {TARGET_PEAK_FRACTION}"],
    )
    _common.table("End2End inference by batch size", rows,
                  ["profile", "batch_size", "xla", "s_per_batch", "images_per_s", "gflops", "fraction_of_peak"])
    warning = _common.warn_if_above_peak([r["fraction_of_peak"] for r in rows], started["load_average_1min"])
    summary = {"matmul_peak_gflops": peak, "warning": warning}
    for name, entry in profiles.items():
        summary.update({f"{name}_best_batch": entry["best"]["batch_size"],
                        f"{name}_images_per_s": entry["best"]["images_per_s"],
                        f"{name}_fraction_of_peak": entry["best"]["fraction_of_peak"],
                        f"{name}_meets_target": entry["meets_target"]})
    _common.write_result(
        NAME, args.results, args.quick, started, summary=summary,
        flop_convention="2 x MACs of Conv2D and Dense layers, counted from layer shapes",
        matmul_peak={"before": peak_before, "after": peak_after, "peak_gflops": peak},
        target_fraction_of_peak=TARGET_PEAK_FRACTION,
        profiles=profiles,
    )
    return 0


def _time_batch(model, batch: int, flops: int, *, repeats: int, jit: bool) -> dict:
    """Seconds per batch of random images through the pipeline's scorer; the first call traces (untimed)."""
    import tensorflow as tf

    from common.inference import make_scorer

    images = tf.random.normal((batch, *model.input_shape[1:]), seed=1)
    if jit:
        score = tf.function(lambda x: model(x, training=False)[:, 1], jit_compile=True)
    else:
        score = make_scorer(model, tta=False)
    timing = _common.best_of(lambda: score(images).numpy(), repeats=repeats, warmup=1)
    seconds = timing["best_s"]
    return {
        "batch_size": batch,
        "xla": jit,
        "s_per_batch": seconds,
        "median_s_per_batch": timing["median_s"],
        "images_per_s": batch / seconds,
        "gflops": flops * batch / seconds / 1e9,
    }


def _gpu_plan(model, costs, profile: dict, set_phase) -> dict:
    """What a GPU run of this profile needs: FLOPs per image and phase, memory per training batch."""
    batch = profile.training.batch_size
    phases = {}
    for phase in PHASES:
        set_phase(model, phase)
        phases[phase] = training_flops(layer_costs(model)) / 1e9
    set_phase(model, "stage2")
    mixed = profile.model.mixed_precision
    return {
        "forward_gflop_per_image": forward_flops(costs) / 1e9,
        "training_gflop_per_image": phases,
        "memory_float32": memory_estimate(model, costs, batch, 4),
        "memory_mixed_float16": memory_estimate(model, costs, batch, 2) if mixed else None,
        "note": "memory is a lower bound: activations kept for backward + Adam state; cuDNN workspace comes on top",
    }


if __name__ == "__main__":
    raise SystemExit(main())
