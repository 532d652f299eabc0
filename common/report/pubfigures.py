"""Figures of the publication sections: reliability diagrams, precision-recall curves, a subgroup forest
plot and the domain-shift scatter. Drawn at 7.2 in (a page's text width) so 8 pt text prints at 8 pt;
they plot numbers computed elsewhere (common.calibration, common.operating_points, ...), never compute them.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd

from common import metrics, operating_points
from common.report.figures import COLOURS, plt, png_bytes

WIDTH = 7.2
METHOD_STYLE = {"platt": ("--", "Platt (fitted on validation)"), "isotonic": (":", "isotonic (fitted on validation)")}


def reliability_figure(results: dict[str, dict]) -> bytes | None:
    """One panel per row: observed fraction against mean score per bin, bootstrap bars, recalibrated curves."""
    if not results:
        return None
    columns = min(3, len(results))
    rows = math.ceil(len(results) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(WIDTH, 2.55 * rows + 0.5), squeeze=False)
    for ax, (label, result) in zip(axes.flat, results.items(), strict=False):
        raw = pd.DataFrame(result["raw"]["curve"])
        ax.plot([0, 1], [0, 1], color="#999999", lw=0.8)
        low = (raw["observed"] - raw["band_low"]).clip(lower=0).fillna(0)
        high = (raw["band_high"] - raw["observed"]).clip(lower=0).fillna(0)
        ax.errorbar(raw["mean_score"], raw["observed"], yerr=[low, high], fmt="none", ecolor=COLOURS[0], lw=1,
                    capsize=2)  # fmt: skip
        ax.scatter(raw["mean_score"], raw["observed"], s=12 + 60 * raw["n"] / raw["n"].max(), color=COLOURS[0],
                   zorder=3, label="as scored (95% bootstrap band)")  # fmt: skip
        text = [f"ECE as scored {result['raw']['ece']:.3f}"]
        for colour, method in zip(COLOURS[1:], ("platt", "isotonic"), strict=False):
            if "curve" not in result.get(method, {}):
                continue
            curve = pd.DataFrame(result[method]["curve"])
            style, name = METHOD_STYLE[method]
            ax.plot(curve["mean_score"], curve["observed"], style, color=colour, lw=1.4, marker=".", label=name)
            text.append(f"{method} {result[method]['ece']:.3f}")
        ax.text(0.03, 0.97, "\n".join(text), transform=ax.transAxes, va="top", fontsize=8)
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="mean score in bin", ylabel="observed positives")
        ax.set_title(textwrap.fill(label, 34), fontsize=8.5)
        ax.set_aspect("equal")
    for ax in axes.flat[len(results) :]:
        ax.remove()
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    return png_bytes(fig, rect=(0, 0.06 if rows > 1 else 0.12, 1, 1))


def precision_recall_figure(curves: dict[str, tuple[pd.DataFrame, str]]) -> bytes | None:
    """Left: image level (image-level rows); right: exam level (CNN max over views, patient-level rows)."""
    if not curves:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.7))
    for ax, unit in zip(axes, ("image", "exam"), strict=True):
        prevalence = None
        for colour, (label, (frame, level)) in zip(COLOURS, curves.items(), strict=False):
            if unit == "image" and level != "image":
                continue
            data = frame if unit == "image" or level == "patient" else metrics.patient_scores(frame, how="max")
            test = data[data["split"] == "test"]
            y, s = test["label"].to_numpy().astype(int), test["score"].to_numpy(float)
            if y.min() == y.max():
                continue
            recall, precision = operating_points.pr_curve(y, s)
            ax.step(recall, precision, where="post", color=colour, lw=1.5,
                    label=f"{textwrap.shorten(label, 34)} (AP {operating_points.auprc(y, s):.3f})")  # fmt: skip
            prevalence = y.mean()
        if prevalence is not None:
            ax.axhline(prevalence, color="#999999", ls=":", lw=1, label=f"prevalence {prevalence:.2f}")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall (sensitivity)", ylabel="precision (PPV)",
               title=f"{unit} level")  # fmt: skip
        ax.legend(fontsize=8, loc="upper right")
    return png_bytes(fig)


def forest_figure(frame: pd.DataFrame) -> bytes | None:
    """AUC with its 95% CI per subgroup cell and model; small cells drawn with open markers."""
    cells = frame[np.isfinite(frame["auc"].astype(float))]
    if cells.empty:
        return None
    groups = list(dict.fromkeys(f"{a} = {v}" for a, v in zip(cells["attribute"], cells["value"], strict=True)))
    models = list(dict.fromkeys(cells["model"]))
    fig, ax = plt.subplots(figsize=(WIDTH, 0.8 + 0.32 * len(groups) * max(1, len(models)) ** 0.5))
    step = 0.8 / max(1, len(models))
    for number, (colour, model) in enumerate(zip(COLOURS, models, strict=False)):
        part = cells[cells["model"] == model]
        y = np.array([groups.index(f"{a} = {v}") for a, v in zip(part["attribute"], part["value"], strict=True)])
        y = y + (number - (len(models) - 1) / 2) * step
        ci = np.array([list(c) for c in part["auc_ci95"]], dtype=float)
        auc = part["auc"].to_numpy(float)
        xerr = np.clip([auc - ci[:, 0], ci[:, 1] - auc], 0, None)  # a percentile CI may exclude its point
        ax.errorbar(auc, y, xerr=xerr, fmt="none", ecolor=colour, lw=1)
        small = part["small"].to_numpy(bool)
        ax.scatter(auc[~small], y[~small], color=colour, s=22, zorder=3, label=textwrap.shorten(model, 40))
        ax.scatter(auc[small], y[small], facecolors="white", edgecolors=colour, s=22, zorder=3)
    ax.axvline(0.5, color="#999999", ls=":", lw=1)
    ax.set_yticks(range(len(groups)), groups)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="test AUC (95% CI, patients resampled)")
    ax.legend(fontsize=8, loc="lower left")
    return png_bytes(fig)


def shift_figure(frame: pd.DataFrame) -> bytes | None:
    """AUC drop against each distance measure, one marker per baseline model, labelled by domain."""
    if frame.empty or not np.isfinite(frame["auc_drop"].astype(float)).any():
        return None
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.5))
    for ax, (measure, title) in zip(axes, (("intensity_distance", "intensity histogram distance (W1)"),
                                           ("mmd2", "penultimate-feature MMD^2")), strict=True):  # fmt: skip
        for colour, (model, part) in zip(COLOURS, frame.groupby("model", sort=False), strict=False):
            x, y = part[measure].to_numpy(float), part["auc_drop"].to_numpy(float)
            ax.plot(x, y, "o", color=colour, label=f"model {model} (in-domain: {part['reference'].iloc[0]})")
            for xi, yi, name in zip(x, y, part["domain"], strict=True):
                if np.isfinite(xi) and np.isfinite(yi):
                    ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=8, color=colour)
        ax.axhline(0, color="#999999", lw=0.7)
        ax.margins(0.15)
        ax.set(xlabel=title, ylabel="AUC drop vs in-domain test AUC")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    return png_bytes(fig, rect=(0, 0.08, 1, 1))
