"""Grad-CAM overlays of the most and least confident test images.

The heatmaps come from the model code (`common.gradcam.gradcam_maps(model, images) -> (N, H, W)`, >= 0,
unnormalised); the report only loads the model folder the way inference does (common.model_folder) and
draws. TensorFlow loads only when the figure is drawn; when anything in drawing the maps fails, the figure
is skipped and the report says why in a visible note, and the rest of the report goes on.

Three rows: the most confident cancer calls (highest scores), the most confident all-clear calls
(lowest scores) and the least confident cases (scores closest to the model's frozen validation
threshold), so a reader sees where the model looks when it is sure either way and when it hesitates.
All nine maps share one colour scale (the colour bar), so a faint map looks faint instead of being
stretched to full colour by its own maximum; a map that is all zero or constant shows nothing about
where the model looks, and says so on the panel and in a report note. Each map's maximum and the share
of its mass inside the breast and inside the ground-truth lesion (synthetic data: lesions.csv) go into
summary.json next to that region's share of the image, and the arrays into figures/gradcam.npz.
What of each image may be shown follows its BurnedInAnnotation tag (common.burned_in).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from common import burned_in, model_folder
from common.artifacts import error_line
from common.radiomics.segmentation import segment_breast
from common.report.domain import network_spacing
from common.report.figures import plt, png_bytes
from common.report.ground_truth import lesion_masks

CASES_PER_GROUP = 3
RELATIVE_SPREAD = 1e-6  # a map whose max - min is below this share of its max is constant
VISIBLE_FROM = 0.02  # heat below this share of the colour scale stays transparent


@dataclass(frozen=True)
class GradcamFigure:
    png: bytes | None  # None: skipped, `caption` says why
    caption: str
    warnings: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)  # summary.json's "gradcam"
    arrays: bytes | None = None  # npz: the figure's source arrays


def confident_cases(scores: pd.DataFrame, threshold: float, count: int = CASES_PER_GROUP) -> dict[str, pd.DataFrame]:
    test = scores[scores["split"] == "test"].assign(margin=lambda f: (f["score"] - threshold).abs())
    by_score = test.sort_values(["score", "image_id"], ascending=[False, True])
    return {
        "surest cancer call": by_score.head(count),
        "surest all-clear": by_score.tail(count).iloc[::-1],
        "least confident": test.sort_values(["margin", "image_id"]).head(count),
    }


def gradcam_heatmaps(model_dir: Path, image_paths: list[Path]) -> tuple[np.ndarray, str]:
    """(N, H, W) maps of the model in `model_dir` for the given preprocessed PNGs, and how they were made."""
    from common import gradcam  # TensorFlow only loads when the figure is drawn

    model, prep = model_folder.read(model_dir)
    batch = []
    for path in image_paths:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise FileNotFoundError(f"{path} is missing or unreadable")
        batch.append(model_folder.model_input(model_folder.to_255(image.astype(np.float32)[..., None], prep), prep))
    maps = np.asarray(gradcam.gradcam_maps(model, np.stack(batch)), dtype=np.float32)
    return maps, f"{gradcam.METHOD} at {gradcam.DEFAULT_LAYER}"


def degenerate(heat: np.ndarray) -> str | None:
    """Why a map shows nothing (all zero, constant, not finite), or None when it is a usable map."""
    if not np.isfinite(heat).all():
        return "not finite"
    peak = float(heat.max())
    if peak <= 0:
        return "all zero"
    if peak - float(heat.min()) <= RELATIVE_SPREAD * abs(peak):
        return "constant"
    return None


def map_statistics(heat: np.ndarray, breast: np.ndarray | None, lesion: np.ndarray | None) -> dict[str, Any]:
    """Maximum and mass shares inside breast and lesion, each next to the region's share of the image area."""
    mass = float(heat.sum(dtype=np.float64))

    def share(region: np.ndarray | None) -> tuple[float | None, float | None]:
        if region is None:
            return None, None
        inside = float(heat[region].sum(dtype=np.float64)) / mass if mass > 0 and region.any() else None
        return inside, float(region.mean())

    breast_mass, breast_area = share(breast)
    lesion_mass, lesion_area = share(lesion)
    return {"max": float(heat.max()), "degenerate": degenerate(heat),
            "breast_mass_fraction": breast_mass, "breast_area_fraction": breast_area,
            "lesion_mass_fraction": lesion_mass, "lesion_area_fraction": lesion_area}  # fmt: skip


def gradcam_figure(model_dir: Path, images_dir: Path, scores: pd.DataFrame, threshold: float, title: str, *,
                   images: pd.DataFrame | None = None, lesions: pd.DataFrame | None = None,
                   show_burned_in: bool = False) -> GradcamFigure:  # fmt: skip
    """The overlay grid; `images` is images.csv (tags, geometry), `lesions` synth's lesions.csv when known."""
    if "image_id" not in scores.columns:
        return GradcamFigure(None, "Grad-CAM skipped: scores.csv has no image_id")
    tags = burned_in.tags(images)
    rows = {} if images is None else {row["image_id"]: row for _, row in images.iterrows()}
    test_ids = scores.loc[scores["split"] == "test", "image_id"]
    policy = {i: burned_in.display(tags.get(i, "UNKNOWN"), show_burned_in) for i in test_ids}
    excluded = {i for i, shown in policy.items() if shown == burned_in.WITHHELD}
    loaded: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    unmaskable: set[str] = set()
    while True:  # an UNKNOWN image without a breast mask cannot be masked: leave it out and choose again
        groups = confident_cases(scores[~scores["image_id"].isin(excluded | unmaskable)], threshold)
        cases = pd.concat(groups.values(), keys=list(groups), names=["group", None]).reset_index(level=0)
        for image_id in cases["image_id"]:
            if image_id not in loaded:
                loaded[image_id] = _image_and_breast(images_dir / f"{image_id}.png", _row(rows, image_id))
        failed = {i for i in cases["image_id"] if loaded[i][1] is None and policy[i] == burned_in.BREAST_ONLY}
        if not failed:
            break
        unmaskable |= failed
    notes = _privacy_notes(tags, policy, excluded, unmaskable, set(cases["image_id"]), show_burned_in)
    if cases.empty:
        return GradcamFigure(None, "Grad-CAM skipped: no test image may be shown. " + " ".join(notes), tuple(notes))
    paths = [images_dir / f"{image_id}.png" for image_id in cases["image_id"]]
    try:
        maps, method = gradcam_heatmaps(model_dir, paths)
    except Exception as error:  # noqa: BLE001 - one figure must never stop the report
        return GradcamFigure(None, f"Grad-CAM skipped: the hook failed ({type(error).__name__}: {error_line(error)})")

    panels = []
    for (_, case), heat in zip(cases.iterrows(), maps, strict=True):
        image, breast = loaded[case["image_id"]]
        heat = cv2.resize(heat, (image.shape[1], image.shape[0])) if heat.shape != image.shape else heat
        malignant, benign = lesion_masks(lesions, _row(rows, case["image_id"]), image.shape)
        stats = map_statistics(heat, breast, malignant if lesions is not None else None)
        panels.append({"case": case, "image": image, "breast": breast, "heat": heat, "malignant": malignant,
                       "benign": benign, "shown": policy[case["image_id"]], "stats": stats})  # fmt: skip
    scale = max([p["stats"]["max"] for p in panels if p["stats"]["degenerate"] is None], default=1.0)
    png = _draw(panels, list(groups), scale, title, method)
    warnings = [f"Grad-CAM map of {p['case']['image_id']} ({p['case']['group']}) is degenerate "
                f"({p['stats']['degenerate']}): it shows nothing about where the model looks." for p in panels
                if p["stats"]["degenerate"]]  # fmt: skip
    details = {
        "model": title, "model_folder": model_dir.name, "method": method, "colour_scale_max": scale,
        "lesions_known": lesions is not None, "degenerate_maps": len(warnings),
        "withheld_burned_in_yes": len(excluded), "withheld_no_breast_mask": len(unmaskable),
        "maps": [{"image_id": p["case"]["image_id"], "group": p["case"]["group"], "label": int(p["case"]["label"]),
                  "score": float(p["case"]["score"]), "shown": p["shown"], **p["stats"]} for p in panels],
    }  # fmt: skip
    outline = (
        "white outline: malignant finding from lesions.csv, dashed: benign finding"
        if lesions is not None
        else "no ground-truth lesion positions in the work directory (lesions.csv: synthetic data only)"
    )
    caption = (
        f"Heatmaps: {method} of {model_dir.name}, one colour scale for all panels (colour bar: positive "
        f"contribution to the cancer log-odds per feature-map cell; transparent below {VISIBLE_FROM:.0%} of "
        f"it, more opaque as it grows); {outline}. Breast mask: the radiomics segmentation with the pectoral "
        "muscle kept. summary.json lists each map's maximum and its mass inside breast and lesion"
    )
    return GradcamFigure(png, caption, tuple(warnings + notes), details, _arrays(panels))


def _row(rows: dict[str, pd.Series], image_id: str) -> pd.Series:
    """images.csv row of an image; without one, what its id says (view) and nothing else."""
    if image_id in rows:
        return rows[image_id]
    patient, laterality, view = (image_id.rsplit("_", 2) + ["", ""])[:3]
    return pd.Series({"image_id": image_id, "patient_id": patient, "laterality": laterality, "view": view,
                      "flipped": False, "original_height": np.nan, "original_width": np.nan})  # fmt: skip


def _image_and_breast(path: Path, row: pd.Series) -> tuple[np.ndarray, np.ndarray | None]:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FileNotFoundError(f"{path} is missing or unreadable")
    scaled = image.astype(np.float64) / np.iinfo(image.dtype).max  # type: ignore[type-var]  # a 16-bit PNG
    try:  # segmented as a CC view: the pectoral muscle of an MLO view stays in, as a reader sees it
        breast = segment_breast(scaled, "CC", network_spacing(row, image.shape[1])).breast
    except ValueError:  # no breast found
        breast = None
    return image, breast


def _privacy_notes(tags: dict[str, str], policy: dict[str, str], excluded: set[str], unmaskable: set[str],
                   shown: set[str], show_burned_in: bool) -> list[str]:  # fmt: skip
    notes = []
    if excluded:
        notes.append(f"{len(excluded)} test image(s) carry BurnedInAnnotation YES (text in the pixels that may "
                     f"identify a patient) and are never shown in a figure; mammo report {burned_in.OPT_IN_FLAG} "
                     "includes them.")  # fmt: skip
    if show_burned_in:
        opted = sum(tags.get(i) == "YES" for i in shown)
        notes.append(
            f"Run with {burned_in.OPT_IN_FLAG}: images tagged BurnedInAnnotation YES are shown in full "
            f"({opted} of the panels); burned-in text may identify a patient."
        )
    masked = sorted(i for i in shown if policy[i] == burned_in.BREAST_ONLY)
    if masked:
        notes.append(
            f"{len(masked)} image(s) shown have no BurnedInAnnotation YES/NO tag: only pixels inside the "
            "breast mask are shown, because burned-in text outside the breast could identify a patient."
        )
    if unmaskable:
        notes.append(
            f"{len(unmaskable)} test image(s) without a BurnedInAnnotation tag were left out: no breast "
            "mask could be computed to hide what lies outside the breast."
        )
    return notes


def _draw(panels: list[dict], groups: list[str], scale: float, title: str, method: str) -> bytes:
    fig = plt.figure(figsize=(2.7 * CASES_PER_GROUP + 0.9, 4.3 * len(groups)))
    grid = fig.add_gridspec(len(groups), CASES_PER_GROUP + 1, width_ratios=[1.0] * CASES_PER_GROUP + [0.07])
    axes = np.array([[fig.add_subplot(grid[r, c]) for c in range(CASES_PER_GROUP)] for r in range(len(groups))])
    for ax in axes.ravel():
        ax.axis("off")
    position = {group: 0 for group in groups}
    colours = plt.get_cmap("jet")
    for panel in panels:
        case, stats = panel["case"], panel["stats"]
        row, column = groups.index(case["group"]), position[case["group"]]
        position[case["group"]] += 1
        ax = axes[row, column]
        hidden = ~panel["breast"] if panel["shown"] == burned_in.BREAST_ONLY else np.zeros(panel["image"].shape, bool)
        ax.imshow(_grey(panel["image"], panel["breast"], hidden), cmap="gray", vmin=0, vmax=1)
        level = np.clip(panel["heat"] / scale, 0.0, 1.0)
        heat = colours(level)
        heat[..., 3] = np.where(hidden | (level < VISIBLE_FROM), 0.0, 0.25 + 0.45 * level)
        ax.imshow(heat)
        for mask, style, colour in ((panel["malignant"], "solid", "white"), (panel["benign"], "dashed", "#bbbbbb")):
            if mask.any():
                ax.contour(mask.astype(np.float32), levels=[0.5], colors=colour, linestyles=style, linewidths=1.1)
        if stats["degenerate"]:
            ax.text(0.5, 0.5, f"DEGENERATE MAP\n({stats['degenerate']})", transform=ax.transAxes, ha="center",
                    va="center", color="#c00000", fontsize=10, weight="bold",
                    bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "#c00000"})  # fmt: skip
        shown = "" if panel["shown"] == burned_in.FULL else f" ({panel['shown']})"
        ax.set_title(f"{case['group']}\n{case['image_id']}{shown}\nlabel {int(case['label'])}, score "
                     f"{case['score']:.3f}\nmap max {stats['max']:.3g}", fontsize=8)  # fmt: skip
    mappable = plt.cm.ScalarMappable(norm=plt.Normalize(0.0, scale), cmap=colours)
    bar = fig.colorbar(mappable, cax=fig.add_subplot(grid[len(groups) // 2, CASES_PER_GROUP]))
    bar.set_label("positive contribution to the cancer log-odds per cell", fontsize=8)
    fig.suptitle(f"{title}: {method}", fontsize=10)
    return png_bytes(fig)


def _grey(image: np.ndarray, breast: np.ndarray | None, hidden: np.ndarray) -> np.ndarray:
    """The image in [0, 1], windowed on the breast (text elsewhere cannot change it), hidden pixels black."""
    values = image[breast] if breast is not None and breast.any() else image.ravel()
    low, high = np.percentile(values.astype(np.float64), [0.5, 99.5])
    grey = np.clip((image.astype(np.float64) - low) / max(high - low, 1e-9), 0.0, 1.0)
    grey[hidden] = 0.0
    return grey


def _arrays(panels: list[dict]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        image_id=np.array([p["case"]["image_id"] for p in panels]),
        group=np.array([p["case"]["group"] for p in panels]),
        heat=np.stack([p["heat"].astype(np.float32) for p in panels]),
        breast=np.stack(
            [p["breast"] if p["breast"] is not None else np.zeros(p["image"].shape, bool) for p in panels]
        ),  # fmt: skip
        lesion=np.stack([p["malignant"] for p in panels]),
    )
    return buffer.getvalue()
