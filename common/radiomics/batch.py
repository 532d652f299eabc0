"""Features for every image of a preprocess folder, in a process pool (one process per core).

Each image is read from `hires/<image_id>.png` (chest wall left, resampled to the profile's
radiomics.target_spacing_mm; spacing from images.csv `hires_spacing_mm`). When a folder has no
high-resolution copy of an image, the network input `images/<image_id>.png` is used with its own
spacing (original size x original spacing / network size) and counted, since texture measured on it is
coarser. Workers send back only the 34 numbers; a failing image becomes a rejected row and the batch
goes on, also when it takes its worker process down (common.workers retries the images lost with it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from common import burned_in
from common.artifacts import atomic_write_bytes, one_line
from common.constants import ASSUMED_SPACING_MM
from common.progress import progress_bar
from common.radiomics.density import dense_tissue
from common.radiomics.features import FEATURE_NAMES, extract_features
from common.radiomics.segmentation import overlay, segment_breast
from common.workers import run_tasks


@dataclass(frozen=True)
class ImageTask:
    image_id: str
    view: str
    path: Path
    source: str  # "hires" or "network"
    overlay_path: Path | None
    spacing_mm: float | None = None  # known pixel spacing, or
    width_mm: float | None = None  # the image's physical width, when its spacing follows from its size
    breast_only: bool = False  # the overlay shows nothing outside the breast (BurnedInAnnotation not NO)

    def spacing_for(self, image: np.ndarray) -> float:
        if self.spacing_mm is not None:
            return self.spacing_mm
        if self.width_mm is None:
            raise ValueError("no hires copy and no original size in images.csv: pixel spacing unknown")
        return self.width_mm / image.shape[1]


def plan(images: pd.DataFrame, folder: Path, masks_dir: Path | None) -> list[ImageTask]:
    """One task per images.csv row, preferring the high-resolution copy; overlays follow common.burned_in."""
    tasks, tags = [], burned_in.tags(images)
    for row in images.itertuples(index=False):
        hires = folder / "hires" / f"{row.image_id}.png"
        shown = burned_in.display(tags.get(row.image_id, "UNKNOWN"), show_burned_in=False)
        overlay_path = masks_dir / f"{row.image_id}.png" if masks_dir and shown != burned_in.WITHHELD else None
        breast_only = shown == burned_in.BREAST_ONLY
        if hires.is_file() and _positive(getattr(row, "hires_spacing_mm", None)):
            spacing = float(row.hires_spacing_mm)
            tasks.append(ImageTask(row.image_id, row.view, hires, "hires", overlay_path, spacing_mm=spacing,
                                   breast_only=breast_only))  # fmt: skip
            continue
        network = folder / "images" / f"{row.image_id}.png"
        recorded = getattr(row, "pixel_spacing_mm", None)
        original = float(recorded) if recorded is not None and _positive(recorded) else ASSUMED_SPACING_MM
        width = getattr(row, "original_width", None)
        width_mm = float(width) * original if width is not None and _positive(width) else None
        tasks.append(ImageTask(row.image_id, row.view, network, "network", overlay_path, width_mm=width_mm,
                               breast_only=breast_only))  # fmt: skip
    return tasks


def _positive(value: Any) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return False


def image_features(task: ImageTask) -> dict[str, Any]:
    """Segment and measure one image; {'image_id', 'source', features...} or {'image_id', 'reason'}."""
    try:
        image = cv2.imread(str(task.path), cv2.IMREAD_UNCHANGED)
        if image is None:
            return {"image_id": task.image_id, "reason": f"cannot read {task.path.parent.name}/{task.path.name}"}
        if image.ndim != 2:
            return {"image_id": task.image_id, "reason": f"expected a greyscale image, got shape {image.shape}"}
        spacing = task.spacing_for(image)
        segmentation = segment_breast(image, task.view, spacing)
        features = extract_features(image, segmentation.breast, spacing)
        if not all(np.isfinite(v) for v in features.values()):
            bad = next(k for k, v in features.items() if not np.isfinite(v))
            return {"image_id": task.image_id, "reason": f"feature {bad} is not finite"}
        if task.overlay_path is not None:
            shown = np.where(segmentation.breast, image, 0) if task.breast_only else image
            picture = overlay(shown, segmentation.breast, dense_tissue(image, segmentation.breast, spacing))
            ok, encoded = cv2.imencode(".png", picture)
            if ok:
                atomic_write_bytes(task.overlay_path, encoded.tobytes())
        return {"image_id": task.image_id, "source": task.source, "breast_fraction": segmentation.fraction,
                **features}
    except MemoryError:
        return {"image_id": task.image_id, "reason": "image too large for memory"}
    except Exception as error:  # one odd image must not stop the batch
        return {"image_id": task.image_id, "reason": f"{type(error).__name__}: {one_line(str(error))}"}


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


def run_all(tasks: list[ImageTask], workers: int | None) -> Iterator[dict[str, Any]]:
    """Results in task order."""
    progress = progress_bar(len(tasks), "radiomics", "image")
    with progress:
        yield from run_tasks(image_features, tasks, workers, on_lost=_lost, label="radiomics", done=progress.update,
                             initializer=_init_worker)


def _lost(task: ImageTask) -> dict[str, Any]:
    return {"image_id": task.image_id, "reason": "its worker process was killed twice while processing it "
                                                 "(out of memory?)"}


def feature_table(results: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(features: image_id + 34, rejected: image_id, reason)."""
    good = [r for r in results if "reason" not in r]
    bad = [r for r in results if "reason" in r]
    features = pd.DataFrame(good, columns=["image_id", *FEATURE_NAMES])
    rejected = pd.DataFrame(bad, columns=["image_id", "reason"])
    return features, rejected
