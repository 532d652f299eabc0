"""Figures where a reader would rather look than read: ROC curves with CI bands, loss curves with the
stage boundary (thesis Figures 3-4), score distributions by class and confusion matrices at the
frozen validation thresholds. Every function returns PNG bytes; nothing is shown on screen (Agg).
The bytes also carry the same figure as SVG (`Rendered.svg`) for print; sizes and fonts are chosen so
that text stays at least 8 pt when a figure is printed at its own width.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.figure  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from common import metrics  # noqa: E402
from common.metrics import roc_points  # noqa: E402

matplotlib.rcParams.update({"font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "legend.fontsize": 8,
                            "xtick.labelsize": 8, "ytick.labelsize": 8, "svg.hashsalt": "mammo-report"})  # fmt: skip
FPR_GRID = np.linspace(0.0, 1.0, 101)
COLOURS = ("#1b6ca8", "#d1495b", "#2a9d8f", "#e9a03b", "#6c4f9e", "#5c5c5c")
DPI = 110


@dataclass(frozen=True)
class Curve:
    """Test-split labels and scores of one model; `groups` (patient ids) makes the band resample patients."""

    label: str
    y: np.ndarray
    s: np.ndarray
    groups: np.ndarray | None = None


@dataclass(frozen=True)
class Figure:
    name: str  # file stem in figures/
    title: str
    caption: str
    png: bytes
    warnings: tuple[str, ...] = ()  # shown as notes right below the figure
    details: dict | None = None  # what summary.json records about the figure
    arrays: bytes | None = None  # npz of the arrays drawn, written beside the PNG

    @property
    def svg(self) -> bytes | None:
        return getattr(self.png, "svg", None)


class Rendered(bytes):
    """PNG bytes carrying the same figure as SVG in `.svg`: still plain bytes to every caller (the HTML
    inlines the PNG), while the report also writes the vector file."""

    svg: bytes


def split_curve(label: str, scores: pd.DataFrame, level: str) -> Curve:
    test = scores[scores["split"] == "test"]
    groups = test["patient_id"].to_numpy() if level == "image" else None
    return Curve(label, test["label"].to_numpy().astype(int), test["score"].to_numpy(float), groups)


def roc_band(curve: Curve, *, n_boot: int, seed: int, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile band of the TPR on FPR_GRID from a bootstrap of the test cases.

    Resamples patients when `groups` is given (as the AUC interval of common.metrics does), so the band
    and the tabulated CI describe the same uncertainty; replicates missing a class are redrawn.
    """
    replicates = metrics.bootstrap_replicates(_tpr_on_grid, curve.y, curve.s, n_boot=n_boot, seed=seed,
                                              groups=curve.groups)
    low, high = metrics.percentile_interval(replicates, level)
    return low, high


def _tpr_on_grid(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    fpr, tpr = roc_points(y, s)
    return np.interp(FPR_GRID, fpr, tpr)


def roc_figure(panels: dict[str, list[Curve]], *, n_boot: int, seed: int) -> bytes:
    """One axes per panel title; each curve with its AUC and a shaded 95% bootstrap band."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.7 * len(panels), 3.9), squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels.items(), strict=True):
        for colour, curve in zip(COLOURS, curves, strict=False):
            if curve.y.all() or not curve.y.any():
                continue
            fpr, tpr = roc_points(curve.y, curve.s)
            lo, hi = roc_band(curve, n_boot=n_boot, seed=seed)
            ax.fill_between(FPR_GRID, lo, hi, color=colour, alpha=0.18, linewidth=0)
            auc = metrics.roc_auc(curve.y, curve.s)
            ax.plot(fpr, tpr, color=colour, lw=1.8, label=f"{curve.label} (AUC {auc:.3f})")
        ax.plot([0, 1], [0, 1], color="#999999", lw=0.8, ls=":")
        ax.set(title=title, xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01))
        ax.set_aspect("equal")
        ax.legend(loc="lower right", fontsize=8)
    return png_bytes(fig)


def stage_history(stage1: pd.DataFrame | None, stage2: pd.DataFrame | None) -> tuple[pd.DataFrame, float | None]:
    """Both stages on one running epoch axis; returns the frame and the x of the stage boundary."""
    parts = [(1, frame) for frame in (stage1,) if frame is not None]
    if stage2 is not None:
        if "stage" in stage2.columns and stage1 is not None and "stage" in stage1.columns:
            stage2 = stage2[~stage2["stage"].astype(str).isin(set(stage1["stage"].astype(str)))]  # stage 2 only
        parts.append((2, stage2))
    frames = [frame.assign(part=number) for number, frame in parts]
    history = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["loss", "val_loss", "part"])
    history["x"] = np.arange(1, len(history) + 1)
    boundary = None
    if stage1 is not None and stage2 is not None and len(stage2):
        boundary = float((history["part"] == 1).sum()) + 0.5
    return history, boundary


def loss_figure(history: pd.DataFrame, boundary: float | None, title: str) -> bytes:
    """Training and validation loss (and validation AUC when logged) against the running epoch."""
    has_auc = "val_auc" in history.columns and history["val_auc"].notna().any()
    fig, axes = plt.subplots(2 if has_auc else 1, 1, figsize=(6.4, 5.2 if has_auc else 3.6), sharex=True,
                             squeeze=False, gridspec_kw={"height_ratios": [2, 1]} if has_auc else None)  # fmt: skip
    ax = axes[0, 0]
    ax.plot(history["x"], history["loss"], color=COLOURS[0], marker=".", label="training loss")
    ax.plot(history["x"], history["val_loss"], color=COLOURS[1], marker=".", label="validation loss")
    ax.set(title=title, ylabel="loss")
    if has_auc:
        axes[1, 0].plot(history["x"], history["val_auc"], color=COLOURS[2], marker=".", label="validation AUC")
        axes[1, 0].set(ylabel="AUC")
        axes[1, 0].legend(fontsize=8)
    for row in axes[:, 0]:
        if boundary is not None:
            row.axvline(boundary, color="#444444", ls="--", lw=1)
        row.grid(alpha=0.3)
    if boundary is not None:
        ax.text(boundary, ax.get_ylim()[1], " stage 2: all layers", va="top", fontsize=8)
        ax.text(boundary, ax.get_ylim()[1], "stage 1: top layers ", va="top", ha="right", fontsize=8)
    axes[-1, 0].set_xlabel("epoch (stages concatenated)")
    ax.legend(fontsize=8, loc="center right")
    return png_bytes(fig)


def score_distribution_figure(models: list[tuple[str, Curve, float]]) -> bytes:
    """Test score histograms of controls and cancers, with the validation G-mean threshold."""
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.2), squeeze=False)
    for ax, (title, curve, threshold) in zip(axes[0], models, strict=True):
        bins = np.linspace(min(curve.s.min(), threshold), max(curve.s.max(), threshold), 25)
        ax.hist(curve.s[curve.y == 0], bins=bins, color=COLOURS[0], alpha=0.6, density=True, label="label 0")
        ax.hist(curve.s[curve.y == 1], bins=bins, color=COLOURS[1], alpha=0.6, density=True, label="label 1")
        ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.3f}")
        ax.set(xlabel="score", ylabel="density")
        ax.set_title(textwrap.fill(title, 30), fontsize=9)
        ax.legend(fontsize=8)
    return png_bytes(fig)


def confusion_figure(models: list[tuple[str, Curve, float]]) -> bytes:
    """Confusion matrices on the test split at each model's frozen threshold."""
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.4), squeeze=False)
    for ax, (title, curve, threshold) in zip(axes[0], models, strict=True):
        counts = metrics.binary_metrics(curve.y, curve.s, threshold)
        matrix = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]])
        ax.imshow(matrix, cmap="Blues", vmin=0)
        for (i, j), value in np.ndenumerate(matrix):
            colour = "white" if value > matrix.max() / 2 else "black"
            ax.text(j, i, str(value), ha="center", va="center", color=colour, fontsize=12)
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["pred 0", "pred 1"], yticklabels=["true 0", "true 1"])
        ax.set_title(textwrap.fill(title, 26) + f"\nthreshold {threshold:.3f}", fontsize=9)
    return png_bytes(fig)


def png_bytes(fig: matplotlib.figure.Figure, rect: tuple[float, float, float, float] | None = None) -> bytes:
    """The figure as PNG (a `Rendered`, so its SVG comes along); closes the figure. `rect` keeps part of the
    figure free of axes (e.g. for a figure-level legend)."""
    png, svg = io.BytesIO(), io.BytesIO()
    fig.tight_layout(rect=rect)
    fig.savefig(png, format="png", dpi=DPI, metadata={"Software": None})
    fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    rendered = Rendered(png.getvalue())
    rendered.svg = svg.getvalue()
    return rendered
