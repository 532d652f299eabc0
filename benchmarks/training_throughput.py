"""Training step: images/s of stage 1 and stage 2 at the demo size and at full size, against the matmul peak.

Where a profile trains in half precision (common.precision) each phase is timed in float32 as well, in the
same run, and the summary gives the ratio.

Each phase is the pipeline's own set-up (common.model.set_phase, common.training.compile_for with the
profile's Table 6 settings) timed with `train_on_batch` on in-memory batches after one untimed step
(tracing). Training FLOPs are counted from the layer shapes, with the backward pass only as deep as the
phase trains (benchmarks/model_cost.py), so the achieved GFLOP/s compares with the matmul peak measured in
the same run. Separately, the tf.data input pipeline (common.data.training_dataset: PNG decode and the
Table 7 augmentation) is timed alone on real mammograms, to show whether it can keep the step fed.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import _common
from model_cost import layer_costs, training_flops

NAME = "training_throughput"
PHASES = ("stage1_config1", "stage1_config2", "stage2")
# (batch size, timed steps) per profile; full size is about 4 s per image forward on 2 cores.
SETTINGS = {"demo": (16, 4), "full": (2, 2)}
QUICK_SETTINGS = {"demo": (16, 2), "full": (1, 1)}
QUICK_PHASES = {"demo": PHASES, "full": ("stage1_config1", "stage2")}


def main() -> int:
    p = _common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--profiles", nargs="+", default=["demo", "full"], help="profiles to time (default: demo full)")
    args = p.parse_args()
    started = _common.machine()

    import keras
    import tensorflow as tf

    from common.profile import load_profile

    tf.get_logger().setLevel("ERROR")  # one retracing notice per rebuilt model would bury the tables
    repeats = 2 if args.quick else 3
    peak_before = _common.matmul_peak(4096, repeats)
    rows, feeds = [], []
    mammograms = _common.oriented_mammograms(0.1)
    for name in args.profiles:
        profile = load_profile(name)
        batch, steps = (QUICK_SETTINGS if args.quick else SETTINGS).get(name, (8, 2))
        with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
            feed_batch = profile.training.batch_size
            data = input_pipeline(profile, mammograms, feed_batch, Path(tmp))
            feeds.append({"profile": name, "batch_size": feed_batch, **time_input_pipeline(data, steps)})
            # fit on the real input pipeline where the step runs at the profile's batch size; at full size a
            # step takes seconds per image here, so only the in-memory step is timed.
            fit_data = data if batch == feed_batch else None
            for phase in (QUICK_PHASES.get(name, PHASES) if args.quick else PHASES):
                rows.append({"profile": name, **time_phase(profile, phase, batch, steps, fit_data)})
                keras.backend.clear_session()
                if rows[-1]["precision"] != "float32":  # the profile trains in half precision here: by how much?
                    rows.append({"profile": name, **time_phase(profile, phase, batch, steps, fit_data,
                                                               precision="float32")})
                    keras.backend.clear_session()
                if phase == "stage2" and rows[-1]["xla"]:  # the profile compiles with XLA: is that a gain here?
                    rows.append({"profile": name, **time_phase(profile, phase, batch, steps, fit_data, xla=False)})
                    keras.backend.clear_session()
    peak_after = _common.matmul_peak(4096, repeats)
    peak = max(peak_before["peak_gflops"], peak_after["peak_gflops"])
    for row in rows:
        row["fraction_of_peak"] = row["gflops"] / peak

    _common.table(
        f"End2End training steps (matmul peak {peak:.1f} GFLOP/s; fit = with the real tf.data input pipeline)", rows,
        ["profile", "phase", "precision", "xla", "batch_size", "s_per_step", "images_per_s", "train_gflop_per_image",
         "gflops", "fraction_of_peak", "fit_images_per_s", "fit_vs_step"],
    )
    _common.table("tf.data input pipeline alone (PNG decode + Table 7 augmentation, real mammograms)", feeds,
                  ["profile", "batch_size", "batches", "images_per_s"])
    def key(r: dict) -> str:
        return f"{r['profile']}_{r['phase']}{'_xla' if r['xla'] else ''}{'_float32' if r['comparison'] else ''}"

    summary = {f"{key(r)}_images_per_s": r["images_per_s"] for r in rows}
    for r in rows:
        if r["comparison"]:
            summary[f"{r['profile']}_{r['phase']}_half_precision_speedup"] = (
                summary[f"{key(r).removesuffix('_float32')}_images_per_s"] / r["images_per_s"])
    summary.update({f"{key(r)}_fraction_of_peak": r["fraction_of_peak"] for r in rows})
    summary.update({f"{f['profile']}_input_pipeline_images_per_s": f["images_per_s"] for f in feeds})
    float32_rows = [r["fraction_of_peak"] for r in rows if r["precision"] == "float32"]  # half precision may pass it
    summary["warning"] = _common.warn_if_above_peak(float32_rows, started["load_average_1min"])
    _common.write_result(
        NAME, args.results, args.quick, started, summary=summary,
        matmul_peak={"before": peak_before, "after": peak_after, "peak_gflops": peak},
        flop_convention="2 x MACs; backward = weight gradients of trainable layers + input gradients after the "
                        "first trainable layer",
        phases=rows, input_pipeline=feeds,
        note="fit_vs_step = images/s of model.fit on the real input pipeline / images/s on in-memory batches; "
             "on a CPU both compete for the same cores",
    )
    return 0


def time_phase(profile: dict, phase: str, batch: int, steps: int, data, xla: bool | None = None,
               precision: str | None = None) -> dict:  # fmt: skip
    """In-memory train_on_batch steps; and, given a dataset, model.fit over it for the same number of steps.

    XLA and the dtype policy follow the profile (common.training.configure_runtime) unless `xla` or
    `precision` say otherwise.
    """
    import keras
    import numpy as np

    from common.model import Architecture, build_end2end, set_phase
    from common.training import compile_for, configure_runtime

    runtime = configure_runtime(profile)
    if precision is not None:
        keras.mixed_precision.set_global_policy(precision)
    settings = profile.training.phase(phase)
    keras.utils.set_random_seed(0)
    model = build_end2end(Architecture.from_profile(profile), dropout=settings.dropout,
                          weight_decay=settings.weight_decay)
    set_phase(model, phase)
    jit = runtime["jit_compile"] if xla is None else xla
    compile_for(model, settings, jit_compile=jit)
    flops = training_flops(layer_costs(model))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *model.input_shape[1:]), dtype=np.float32)
    y = np.eye(2, dtype=np.float32)[np.arange(batch) % 2]
    weights = np.ones(batch, dtype=np.float32)
    timing = _common.best_of(lambda: model.train_on_batch(x, y, sample_weight=weights), repeats=steps, warmup=1)
    seconds = timing["best_s"]
    row = {
        "phase": phase,
        "precision": keras.mixed_precision.global_policy().name,
        "comparison": precision is not None,
        "batch_size": batch,
        "xla": jit,
        "s_per_step": seconds,
        "median_s_per_step": timing["median_s"],
        "images_per_s": batch / seconds,
        "train_gflop_per_image": flops / 1e9,
        "gflops": flops * batch / seconds / 1e9,
    }
    if data is not None:
        model.fit(data, epochs=1, steps_per_epoch=1, shuffle=False, verbose=0)  # the fit loop's tracing, untimed
        fit_steps = 4 * steps  # an epoch's start-up (iterator, prefetch fill) is part of its cost, amortised
        started = time.perf_counter()
        model.fit(data, epochs=1, steps_per_epoch=fit_steps, shuffle=False, verbose=0)
        row["fit_images_per_s"] = batch * fit_steps / (time.perf_counter() - started)
        row["fit_vs_step"] = row["fit_images_per_s"] / row["images_per_s"]
    return row


def input_pipeline(profile: dict, mammograms, batch: int, folder: Path):
    """common.data.training_dataset over 4 batches of real mammograms at the profile's size, repeated."""
    import cv2
    import pandas as pd

    from common.data import training_dataset
    from common.model_folder import Preprocessing

    height, width = profile.image.height, profile.image.width
    paths = []
    for index in range(4 * batch):
        _, image = mammograms[index % len(mammograms)]
        path = folder / f"{index}.png"
        cv2.imwrite(str(path), cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
        paths.append(str(path))
    frame = pd.DataFrame({"path": paths, "label": [i % 2 for i in range(len(paths))]})
    prep = Preprocessing(featurewise_mean=40.0, height=height, width=width, source="benchmark")
    data = training_dataset(frame, prep, batch_size=batch, augmentation=profile.training.augmentation,
                            weights={0: 1.0, 1: 1.0}, seed=0)
    return data.repeat()


def time_input_pipeline(data, batches: int) -> dict:
    """Images/s out of the dataset alone (no model running), after one warm-up batch."""
    iterator = iter(data)
    next(iterator)
    count = max(4, 2 * batches)
    started = time.perf_counter()
    images = sum(int(next(iterator)[0].shape[0]) for _ in range(count))
    seconds = time.perf_counter() - started
    return {"batches": count, "seconds": seconds, "images_per_s": images / seconds}


if __name__ == "__main__":
    raise SystemExit(main())
