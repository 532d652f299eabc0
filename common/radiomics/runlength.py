"""Grey-level run-length features (OpenBreast GLRL group, Tang 1998 definitions), vectorised.

256 levels spanning the in-mask [min, max] with the rounding of the MATLAB GLRL toolbox
(level = round(255 (x - min) / (max - min)) + 1, so levels run 1..256 and the grey-level emphases
LGR/HGR use those 1-based values). Runs are maximal stretches of equal level along rows (0 degrees),
anti-diagonals (45), columns (90) and diagonals (135); a pixel outside the mask ends a run. (The
MATLAB toolbox instead deletes out-of-mask pixels from each line, which can join runs across a hole;
for a whole-breast mask the two agree except across holes in the mask.) GLN and RLN are divided by
the number of runs, RP is runs / pixels in the mask, each feature the mean over the four directions.
"""

from __future__ import annotations

import numpy as np

NAMES = ("rSRE", "rLRE", "rGLN", "rRPE", "rRLN", "rLGR", "rHGR")
LEVELS = 256
DIRECTIONS = (0, 45, 90, 135)


def quantise(image: np.ndarray, mask: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """0-based levels (MATLAB level minus one) inside the mask, -1 outside."""
    values = image[mask].astype(np.float64)
    lo, hi = values.min(), values.max()
    out = np.full(image.shape, -1, dtype=np.int32)
    if hi > lo:
        # floor(v + 0.5) is MATLAB's round for the non-negative values here (numpy rounds half to even).
        out[mask] = np.floor((values - lo) * ((levels - 1) / (hi - lo)) + 0.5).astype(np.int32)
    else:
        out[mask] = 0
    return out


def lines(levels_image: np.ndarray, direction: int) -> np.ndarray:
    """Re-arrange the image so each row holds one scan line of `direction`, padded with -1."""
    if direction == 0:
        return levels_image
    if direction == 90:
        return levels_image.T
    if direction == 45:  # r + c constant: neighbours at (+1, -1)
        return _anti_diagonals(levels_image)
    if direction == 135:  # r - c constant: the anti-diagonals of the upside-down image
        return _anti_diagonals(levels_image[::-1])
    raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction}")


def _anti_diagonals(image: np.ndarray) -> np.ndarray:
    """Rows of the result are the anti-diagonals r + c = k of `image`, without index arrays.

    Writing row r of the image at offset r into rows of length rows + cols of a flat buffer puts
    pixel (r, c) at flat position r (rows + cols - 1) + (r + c): read back with row length
    rows + cols - 1, column r + c holds exactly anti-diagonal r + c.
    """
    rows, cols = image.shape
    width = rows + cols - 1
    flat = np.full(rows * (width + 1), -1, dtype=image.dtype)
    flat.reshape(rows, width + 1)[:, :cols] = image
    return flat[: rows * width].reshape(rows, width).T


def runs(levels_image: np.ndarray, direction: int) -> tuple[np.ndarray, np.ndarray]:
    """(0-based level, length) of every run along `direction`."""
    scan = lines(levels_image, direction)
    # A -1 column after every line stops runs from continuing onto the next line of the flattened scan.
    flat = np.concatenate([scan, np.full((scan.shape[0], 1), -1, dtype=scan.dtype)], axis=1).ravel()
    inside = flat >= 0
    starts = inside.copy()
    starts[1:] &= flat[1:] != flat[:-1]
    run_index = np.cumsum(starts, dtype=np.int32) - 1
    lengths = np.bincount(run_index[inside], minlength=int(starts.sum()))
    return flat[starts], lengths


def run_features(levels: np.ndarray, lengths: np.ndarray, n_pixels: int) -> dict[str, float]:
    n_runs = levels.size
    j = lengths.astype(np.float64)
    g = levels.astype(np.float64) + 1  # MATLAB 1-based grey level
    return {
        "rSRE": float(np.sum(1 / j**2) / n_runs),
        "rLRE": float(np.sum(j**2) / n_runs),
        "rGLN": float(np.sum(np.bincount(levels).astype(np.float64) ** 2) / n_runs),
        "rRPE": n_runs / n_pixels,
        "rRLN": float(np.sum(np.bincount(lengths).astype(np.float64) ** 2) / n_runs),
        "rLGR": float(np.sum(1 / g**2) / n_runs),
        "rHGR": float(np.sum(g**2) / n_runs),
    }


def glrl_features(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    levels_image = quantise(image, mask).astype(np.int16)  # halves the memory of the diagonal re-arrangements
    n_pixels = int(mask.sum())
    per_direction = [run_features(*runs(levels_image, d), n_pixels) for d in DIRECTIONS]
    return {name: float(np.mean([d[name] for d in per_direction])) for name in NAMES}
