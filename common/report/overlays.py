"""Grad-CAM overlays of the most and least confident test images - an OPTIONAL HOOK.

The heatmaps come from the model code (`common.gradcam.gradcam(model, images) -> (N, H, W)` in
[0, 1]); the report only loads the model folder the way inference does (model.keras plus the
constants of preprocessing.json) and draws. When that module is absent from a build, or anything in
the hook fails, the figure is skipped and the report says why in a visible note - the rest of the
report never depends on TensorFlow.

Three rows: the most confident cancer calls (highest scores), the most confident all-clear calls
(lowest scores) and the least confident cases (scores closest to the model's frozen validation
threshold), so a reader sees where the model looks when it is sure either way and when it hesitates.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from common.report.figures import plt, png_bytes

GRADCAM_MODULE = "common.gradcam"
GRADCAM_FUNCTION = "gradcam"
CASES_PER_GROUP = 3


def confident_cases(scores: pd.DataFrame, threshold: float, count: int = CASES_PER_GROUP) -> dict[str, pd.DataFrame]:
    test = scores[scores["split"] == "test"].assign(margin=lambda f: (f["score"] - threshold).abs())
    by_score = test.sort_values(["score", "image_id"], ascending=[False, True])
    return {
        "surest cancer call": by_score.head(count),
        "surest all-clear": by_score.tail(count).iloc[::-1],
        "least confident": test.sort_values(["margin", "image_id"]).head(count),
    }


def gradcam_heatmaps(model_dir: Path, image_paths: list[Path]) -> np.ndarray:
    """(N, H, W) heatmaps of the model in `model_dir` for the given preprocessed PNGs."""
    module = importlib.import_module(GRADCAM_MODULE)
    from common.data import Preprocessing  # TensorFlow only loads when the hook runs
    from common.model import load_model

    prep = Preprocessing.read(model_dir)
    model = load_model(model_dir / "model.keras")
    batch = []
    for path in image_paths:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise FileNotFoundError(f"{path} is missing or unreadable")
        gray = image.astype(np.float32)[..., None] * prep.rescale
        batch.append(np.repeat(gray, 3, axis=-1) - prep.featurewise_mean)
    return np.asarray(getattr(module, GRADCAM_FUNCTION)(model, np.stack(batch)))


def gradcam_figure(model_dir: Path, images_dir: Path, scores: pd.DataFrame, threshold: float,
                   title: str) -> tuple[bytes | None, str]:  # fmt: skip
    """The overlay grid, or None and the reason it was skipped."""
    if "image_id" not in scores.columns:
        return None, "Grad-CAM skipped: scores.csv has no image_id"
    groups = confident_cases(scores, threshold)
    cases = pd.concat(groups.values(), keys=list(groups), names=["group", None]).reset_index(level=0)
    paths = [images_dir / f"{image_id}.png" for image_id in cases["image_id"]]
    try:
        maps = gradcam_heatmaps(model_dir, paths)
    except ModuleNotFoundError as error:
        if error.name != GRADCAM_MODULE:
            return None, f"Grad-CAM skipped: {error}"
        return None, f"Grad-CAM skipped: {GRADCAM_MODULE} is not available in this build"
    except Exception as error:  # noqa: BLE001 - an optional hook must never stop the report
        return None, f"Grad-CAM skipped: the hook failed ({type(error).__name__}: {str(error).splitlines()[0]})"
    fig, axes = plt.subplots(len(groups), CASES_PER_GROUP, figsize=(2.6 * CASES_PER_GROUP, 4.0 * len(groups)),
                             squeeze=False)  # fmt: skip
    for ax in axes.ravel():
        ax.axis("off")
    position = {group: 0 for group in groups}
    for (_, case), path, heatmap in zip(cases.iterrows(), paths, maps, strict=True):
        row, column = list(groups).index(case["group"]), position[case["group"]]
        position[case["group"]] += 1
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        heatmap = cv2.resize(np.asarray(heatmap, dtype=np.float32), (image.shape[1], image.shape[0]))
        ax = axes[row, column]
        ax.imshow(image, cmap="gray")
        ax.imshow(heatmap, cmap="jet", alpha=0.35, vmin=0, vmax=1)
        ax.set_title(f"{case['group']}\n{case['image_id']}\nlabel {int(case['label'])}, score {case['score']:.3f}",
                     fontsize=8)  # fmt: skip
    fig.suptitle(title, fontsize=10)
    return png_bytes(fig), f"heatmaps from {GRADCAM_MODULE}.{GRADCAM_FUNCTION} on {model_dir.name}"
