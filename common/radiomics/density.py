"""Percent density: dense tissue by the morphological area-gradient rule (OpenBreast `mseg`).

First a skin band of 8 mm is removed (the breast mask eroded by a square of side 16 mm; the image
border, i.e. the chest wall, is not skin). The intensity range of the remaining breast is cut into
25 levels; A(k) = number of those pixels >= level k falls fastest where the fatty background ends,
so after smoothing the first difference of A with a 5-tap Gaussian (sigma 0.8 levels) its minimum
marks the fat/dense transition and pixels at or above the next level are dense. Dense blobs smaller
than 16 mm^2 are dropped. PD = dense pixels / breast pixels (skin band included), a fraction.

OpenBreast builds the area curve over the whole mask and removes the skin band only afterwards; on
scanned film the uncompressed periphery fades slowly to the background, so its pixels make the
steepest drop of A at the lowest levels and almost the whole breast came out dense (PD 0.69 on a
CBIS-DDSM CC view whose glandular tissue covers about half of it). Taking the curve inside the skin
band keeps the rule and removes that failure.
"""

from __future__ import annotations

import cv2
import numpy as np

NAMES = ("pd",)
N_LEVELS = 25
SMOOTHING_SIGMA = 0.8  # in levels
SKIN_GAP_MM = 8.0
MIN_BLOB_MM2 = 16.0


def dense_tissue(image: np.ndarray, mask: np.ndarray, pixel_spacing_mm: float) -> np.ndarray:
    """Boolean mask of dense tissue inside `mask`."""
    side = max(1, round(2 * SKIN_GAP_MM / pixel_spacing_mm))
    # Erosion pads with the maximum (cv2's default constant border), so the image edge is not skin.
    inner = cv2.erode(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))) > 0
    if inner.sum() < 2:
        return np.zeros(mask.shape, dtype=bool)
    values = np.sort(image[inner].astype(np.float64))
    levels = np.linspace(values[0], values[-1], N_LEVELS)
    area = values.size - np.searchsorted(values, levels, side="left")
    taps = np.arange(-2, 3)
    kernel = np.exp(-0.5 * (taps / SMOOTHING_SIGMA) ** 2)
    gradient = np.convolve(np.diff(area).astype(np.float64), kernel, mode="same")
    threshold = levels[int(np.argmin(gradient)) + 1]
    dense = (image >= threshold) & inner
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dense.astype(np.uint8), connectivity=8)
    min_area = round(MIN_BLOB_MM2 / pixel_spacing_mm**2)
    keep = np.zeros(n, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return keep[labels]


def density_features(image: np.ndarray, mask: np.ndarray, pixel_spacing_mm: float) -> dict[str, float]:
    dense = dense_tissue(image, mask, pixel_spacing_mm)
    return {"pd": float(dense.sum() / mask.sum())}
