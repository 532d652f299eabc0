"""Grey-level co-occurrence features (OpenBreast GLCM group), vectorised with `np.bincount`.

Conventions of MATLAB `graycomatrix`/`graycoprops` as OpenBreast calls them: 128 levels spanning the
in-mask [min, max] (level = floor(128 (x - min) / (max - min)), the maximum folded into the top
level), symmetric matrices, distance-1 offsets at 0, 45, 90 and 135 degrees, every pair with a pixel
outside the mask ignored, each feature the mean over the four directions. `cene` is the angular
second moment (sum p^2, MATLAB's "Energy"; skimage's energy is its square root) and `chom` uses
1 / (1 + |i - j|) (MATLAB; skimage uses (i - j)^2).
"""

from __future__ import annotations

import numpy as np

NAMES = ("cene", "ccor", "ccon", "chom", "cent")
LEVELS = 128
# (row, column) steps for 0, 45, 90 and 135 degrees (MATLAB offsets [0 1; -1 1; -1 0; -1 -1]).
OFFSETS = ((0, 1), (-1, 1), (-1, 0), (-1, -1))


def quantise(image: np.ndarray, mask: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """0-based grey levels inside the mask, -1 outside."""
    values = image[mask].astype(np.float64)
    lo, hi = values.min(), values.max()
    out = np.full(image.shape, -1, dtype=np.int32)
    if hi > lo:
        scaled = np.floor((values - lo) * (levels / (hi - lo)))
        out[mask] = np.minimum(scaled, levels - 1).astype(np.int32)
    else:
        out[mask] = 0
    return out


def cooccurrence(levels_image: np.ndarray, offset: tuple[int, int], levels: int = LEVELS) -> np.ndarray:
    """Symmetric count matrix of (pixel, pixel + offset) level pairs with both pixels in the mask."""
    dr, dc = offset
    rows, cols = levels_image.shape
    first = levels_image[max(0, -dr) : rows - max(0, dr), max(0, -dc) : cols - max(0, dc)]
    second = levels_image[max(0, dr) : rows - max(0, -dr), max(0, dc) : cols - max(0, -dc)]
    valid = (first >= 0) & (second >= 0)
    codes = first[valid] * levels + second[valid]
    counts = np.bincount(codes, minlength=levels * levels).reshape(levels, levels)
    return counts + counts.T


def matrix_features(counts: np.ndarray) -> dict[str, float]:
    """graycoprops-style features of one count matrix (normalised here)."""
    p = counts / counts.sum()
    i, j = np.indices(p.shape, dtype=np.float64)
    mu_i, mu_j = float((i * p).sum()), float((j * p).sum())
    sd_i = float(np.sqrt(((i - mu_i) ** 2 * p).sum()))
    sd_j = float(np.sqrt(((j - mu_j) ** 2 * p).sum()))
    # A direction whose pairs all share one level has no variance; MATLAB returns NaN there and
    # OpenBreast's commented fallback is 1 (a constant texture is trivially self-correlated).
    correlation = float(((i - mu_i) * (j - mu_j) * p).sum() / (sd_i * sd_j)) if sd_i * sd_j > 0 else 1.0
    nonzero = p[p > 0]
    return {
        "cene": float((p**2).sum()),
        "ccor": correlation,
        "ccon": float(((i - j) ** 2 * p).sum()),
        "chom": float((p / (1 + np.abs(i - j))).sum()),
        "cent": float(-(nonzero * np.log2(nonzero)).sum()),
    }


def glcm_features(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Mean over the four directions; directions without any in-mask pair are left out of the mean."""
    levels_image = quantise(image, mask)
    per_direction = []
    for offset in OFFSETS:
        counts = cooccurrence(levels_image, offset)
        if counts.sum() > 0:
            per_direction.append(matrix_features(counts))
    if not per_direction:
        raise ValueError("mask has no pair of neighbouring pixels: co-occurrence features undefined")
    return {name: float(np.mean([d[name] for d in per_direction])) for name in NAMES}
