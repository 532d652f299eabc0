"""Fractal dimension by the surface-area method (Caldwell 1990, as used by Li & Giger 2007).

The image is a surface of height = intensity over the breast. At dyadic scales eps = s 2^n mm
(s the pixel spacing, n = 0 .. min(7, floor(log2(longest side)) - 2) as in OpenBreast) the image is
block-averaged by 2^n and the surface area is
    A(eps) = sum over in-mask pixels [eps^2 + eps (|I(x+1, y) - I(x, y)| + |I(x, y+1) - I(x, y)|)],
counting only differences whose two pixels are both inside the mask (so the skin/background jump
does not enter). For a fractal surface A(eps) ~ eps^(2 - D); the feature is minus the slope of
log A against log eps, i.e. D - 2 (OpenBreast's convention).
"""

from __future__ import annotations

import cv2
import numpy as np

NAMES = ("fdim",)
MAX_OCTAVES = 7


def surface_area(image: np.ndarray, mask: np.ndarray, eps_mm: float) -> float:
    img = image.astype(np.float64)
    dx = np.abs(np.diff(img, axis=1))[mask[:, 1:] & mask[:, :-1]].sum()
    dy = np.abs(np.diff(img, axis=0))[mask[1:, :] & mask[:-1, :]].sum()
    return float(mask.sum() * eps_mm**2 + eps_mm * (dx + dy))


def fractal_features(image: np.ndarray, mask: np.ndarray, pixel_spacing_mm: float) -> dict[str, float]:
    # OpenBreast erodes the mask by a 2x2 square first, dropping one-pixel slivers at the skin line.
    mask = cv2.erode(mask.astype(np.uint8), np.ones((2, 2), np.uint8)) > 0
    octaves = min(MAX_OCTAVES, int(np.floor(np.log2(max(image.shape)))) - 2)
    img = image.astype(np.float32)
    log_eps, log_area = [], []
    for n in range(octaves + 1):
        factor = 2**n
        size = (max(1, round(image.shape[1] / factor)), max(1, round(image.shape[0] / factor)))
        small = cv2.resize(img, size, interpolation=cv2.INTER_AREA) if n else img
        small_mask = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.5 if n else mask
        if small_mask.sum() < 2:
            break
        eps = pixel_spacing_mm * factor
        log_eps.append(np.log(eps))
        log_area.append(np.log(surface_area(small, small_mask, eps)))
    if len(log_eps) < 2:
        raise ValueError("mask too small for the fractal dimension: fewer than two scales")
    slope = np.polyfit(log_eps, log_area, 1)[0]
    return {"fdim": float(-slope)}
