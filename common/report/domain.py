"""Domain-shift panel: how the target (hospital) images differ from the source domains (film, ffdm).

What the network sees is compared: a fixed sample of each domain's preprocessed network inputs
(`images/*.png`), the breast segmented with the radiomics step's own `segment_breast`, and in it
(a) the intensity histogram (16-bit values scaled to [0, 1]) and (b) per-image histogram and GLCM
features computed with the radiomics step's functions, so the numbers mean what they mean there
(here on the small network input, so texture values are not comparable with features.csv, which is
computed on the high-resolution copies). Panel (c) shows the target's radiomic features as the
radiomics step computed them (features.csv), standardised, by image label.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from common.radiomics.glcm import glcm_features
from common.radiomics.histogram import histogram_features
from common.radiomics.segmentation import segment_breast
from common.report.figures import COLOURS, plt, png_bytes
from common.report.workdir import DOMAINS, WorkDir

SAMPLE_PER_DOMAIN = 24
DIAGNOSTIC_SAMPLE = 48  # images per (domain, split) behind the intensity distance of the diagnostics table
HIST_BINS = np.linspace(0.0, 1.0, 65)
HIST_CENTRES = (HIST_BINS[:-1] + HIST_BINS[1:]) / 2
PANEL_FEATURES = ("iavg", "istd", "iske", "ient", "ccon", "chom", "cene", "ccor")


def sample_domain(workdir: WorkDir, domain: str, count: int = SAMPLE_PER_DOMAIN) -> tuple[np.ndarray, pd.DataFrame]:
    """Mean breast-intensity histogram and per-image features of an evenly spaced sample of images."""
    index = workdir.table(f"preprocess-{domain}", "images.csv")
    if index is None or index.empty:
        return np.zeros(HIST_BINS.size - 1), pd.DataFrame()
    return _sample(workdir, domain, index, count)


def split_histograms(workdir: WorkDir, count: int = DIAGNOSTIC_SAMPLE) -> dict[tuple[str, str], tuple[np.ndarray, int]]:
    """(domain, split) -> (mean breast-intensity histogram, images behind it) for the validation and test
    splits of every domain, from an evenly spaced sample of at most `count` images each."""
    found = {}
    for domain in DOMAINS:
        index = workdir.table(f"preprocess-{domain}", "images.csv")
        split = workdir.table(f"split-{domain}", "split.csv")
        if index is None or split is None or index.empty:
            continue
        index = index.drop(columns="split", errors="ignore").merge(
            split[["patient_id", "split"]].astype({"patient_id": str}), on="patient_id")
        for name in ("validation", "test"):
            histogram, features = _sample(workdir, domain, index[index["split"] == name], count, features=False)
            if len(features):
                found[(domain, name)] = (histogram, len(features))
    return found


def _sample(workdir: WorkDir, domain: str, index: pd.DataFrame, count: int, *, features: bool = True):
    part = f"preprocess-{domain}"
    if index.empty:
        return np.zeros(HIST_BINS.size - 1), pd.DataFrame()
    index = index.sort_values("image_id", ignore_index=True)
    picks = index.iloc[np.unique(np.linspace(0, len(index) - 1, min(count, len(index))).round().astype(int))]
    histograms, records = [], []
    for _, row in picks.iterrows():
        image = cv2.imread(str(workdir.path(part) / "images" / f"{row['image_id']}.png"), cv2.IMREAD_UNCHANGED)
        if image is None:
            continue
        scaled = image.astype(np.float64) / np.iinfo(image.dtype).max  # type: ignore[type-var]  # a 16-bit PNG
        try:
            mask = segment_breast(scaled, row["view"], network_spacing(row, image.shape[1])).breast
            values = scaled[mask]
            measured = {**histogram_features(values), **glcm_features(scaled, mask)} if features else {}
        except ValueError:  # no breast found or a flat region: leave the image out of the panel
            continue
        histograms.append(np.histogram(values, bins=HIST_BINS, density=True)[0])
        records.append({"image_id": row["image_id"], "label": row.get("label", np.nan),
                        **{name: measured[name] for name in PANEL_FEATURES if name in measured}})  # fmt: skip
    mean = np.mean(histograms, axis=0) if histograms else np.zeros(HIST_BINS.size - 1)
    return mean, pd.DataFrame.from_records(records)


def domain_shift_figure(workdir: WorkDir) -> tuple[bytes | None, pd.DataFrame, list[str]]:
    """Panels (a) and (b); returns the PNG (None without images), the per-image features and notes."""
    samples, notes = {}, []
    for domain in DOMAINS:
        histogram, features = sample_domain(workdir, domain)
        if features.empty:
            notes.append(f"No preprocessed {domain} images in the work directory.")
            continue
        samples[domain] = (histogram, features)
    if not samples:
        return None, pd.DataFrame(), notes
    columns = 4
    rows = 1 + int(np.ceil(len(PANEL_FEATURES) / columns))
    fig = plt.figure(figsize=(3.2 * columns, 2.6 * rows))
    grid = fig.add_gridspec(rows, columns)
    ax = fig.add_subplot(grid[0, :])
    centres = (HIST_BINS[:-1] + HIST_BINS[1:]) / 2
    for colour, (domain, (histogram, features)) in zip(COLOURS, samples.items(), strict=False):
        role = "target" if domain == "hospital" else "source"
        ax.plot(centres, histogram, color=colour, lw=1.8, label=f"{domain} ({role}, {len(features)} images)")
    ax.set(title="(a) breast intensity histogram of the network input", xlabel="intensity (16-bit scaled to 0-1)",
           ylabel="density")  # fmt: skip
    ax.legend(fontsize=8)
    for number, name in enumerate(PANEL_FEATURES):
        axis = fig.add_subplot(grid[1 + number // columns, number % columns])
        data = [features[name].to_numpy() for _, features in samples.values()]
        parts = axis.boxplot(data, patch_artist=True, widths=0.6)
        for colour, box in zip(COLOURS, parts["boxes"], strict=False):
            box.set_facecolor(colour)
            box.set_alpha(0.5)
        axis.set_xticks(range(1, len(samples) + 1), list(samples))
        axis.set_title(f"(b) {name}", fontsize=9)
    table = pd.concat([features.assign(domain=domain) for domain, (_, features) in samples.items()], ignore_index=True)
    return png_bytes(fig), table, notes


def target_features_figure(features: pd.DataFrame, images: pd.DataFrame | None) -> bytes | None:
    """Panel (c): the 34 radiomic features of the target images, z-scored, by image label."""
    if images is not None and "label" not in features.columns and "image_id" in features.columns:
        features = features.merge(images[["image_id", "label"]], on="image_id", how="left")
    names = [c for c in features.columns if c not in {"image_id", "patient_id", "laterality", "view", "label", "split"}]
    numeric = features[names].apply(pd.to_numeric, errors="coerce")
    names = [c for c in names if numeric[c].notna().any()]
    if not names:
        return None
    spread = numeric[names].std(ddof=0).replace(0, np.nan)
    z = (numeric[names] - numeric[names].mean()) / spread
    fig, ax = plt.subplots(figsize=(max(8.0, 0.36 * len(names)), 3.6))
    groups = [("all images", np.ones(len(z), dtype=bool))]
    if "label" in features.columns:
        labels = pd.to_numeric(features["label"], errors="coerce")
        groups = [("label 0", (labels == 0).to_numpy()), ("label 1", (labels == 1).to_numpy())]
    positions = np.arange(len(names))
    for offset, (colour, (title, rows)) in zip((-0.18, 0.18), zip(COLOURS, groups, strict=False), strict=False):
        data = [z.loc[rows, name].dropna().to_numpy() for name in names]
        parts = ax.boxplot(data, positions=positions + offset, widths=0.32, patch_artist=True, showfliers=False)
        for box in parts["boxes"]:
            box.set_facecolor(colour)
            box.set_alpha(0.55)
        parts["boxes"][0].set_label(title)
    ax.set_xticks(positions, names, rotation=90, fontsize=8)
    ax.set(title="(c) target radiomic features (features.csv), standardised", ylabel="z-score")
    ax.axhline(0, color="#999999", lw=0.6)
    ax.legend(fontsize=8)
    return png_bytes(fig)


def network_spacing(row: pd.Series, width: int) -> float:
    """Pixel spacing of the resized network input; 0.1 mm x the resize factor when the source had none."""
    original = pd.to_numeric(pd.Series([row.get("pixel_spacing_mm"), row.get("original_width")]), errors="coerce")
    spacing = original[0] if original.notna()[0] and original[0] > 0 else 0.1
    columns = original[1] if original.notna()[1] and original[1] > 0 else width
    return float(spacing * columns / width)
