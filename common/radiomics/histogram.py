"""Grey-level histogram features (OpenBreast GLHA group) of the raw intensities inside the breast.

MATLAB conventions are kept so values compare with the thesis' toolbox: `std` with ddof=1, `prctile`
(the "hazen" plotting position in numpy), `hist(x, 256)` bins spanning the in-mask range, log2 entropy,
biased skewness and non-excess biased kurtosis (MATLAB `skewness`/`kurtosis` defaults).
"""

from __future__ import annotations

import numpy as np

NAMES = (
    "imin", "imax", "iavg", "istd", "iran", "ient",
    "ip05", "ip30", "ip70", "ip95", "iba1", "iba2", "iske", "ikur",
)  # fmt: skip

ENTROPY_BINS = 256
EPS = float(np.finfo(float).eps)  # MATLAB `eps`, keeps the balance ratios finite for flat regions


def histogram_features(values: np.ndarray) -> dict[str, float]:
    """Features of the in-mask intensities `values` (1-D)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(x.min()), float(x.max())
    mean = float(x.mean())
    centred = x - mean
    m2 = float(np.mean(centred**2))
    p05, p30, p70, p95 = (float(v) for v in np.percentile(x, [5, 30, 70, 95], method="hazen"))
    counts, _ = np.histogram(x, bins=ENTROPY_BINS, range=(lo, hi) if hi > lo else None)
    p = counts[counts > 0] / x.size
    return {
        "imin": lo,
        "imax": hi,
        "iavg": mean,
        "istd": float(x.std(ddof=1)),
        "iran": hi - lo,
        "ient": float(-(p * np.log2(p)).sum()),
        "ip05": p05,
        "ip30": p30,
        "ip70": p70,
        "ip95": p95,
        "iba1": (p95 - mean + EPS) / (mean - p05 + EPS),
        "iba2": (p70 - mean + EPS) / (mean - p30 + EPS),
        "iske": float(np.mean(centred**3) / m2**1.5),
        "ikur": float(np.mean(centred**4) / m2**2),
    }
