"""How far a cohort is from the domain a model was trained on, measured before any training on it.

Two measures, both between a reference sample (the model's last training domain, its validation split:
images the model never trained on but drawn from its training distribution) and the compared domain's test
split (the images whose AUC is reported):
* intensity: the 1-Wasserstein distance between the breast-intensity histograms of the network inputs
  (16-bit values scaled to [0, 1]; what a physicist would check first: exposure, tone curve, detector);
* features: the maximum mean discrepancy (unbiased MMD^2, Gretton et al. 2012) between the baseline CNN's
  penultimate features (the head's global average pool), with a Gaussian kernel whose bandwidth is the
  median pairwise distance of the pooled, standardised sample, and a permutation p-value
  (1 + #{permuted MMD^2 >= observed}) / (1 + permutations).
The in-domain pair (reference validation vs the same domain's test) is the null check: its MMD p-value
should not be small. Samples are capped (`MAX_SAMPLE`, evenly spaced by image id) to keep the cost small.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial.distance import cdist, pdist

MAX_SAMPLE = 200
PERMUTATIONS = 500


def histogram_distance(centres: np.ndarray, histogram_a: np.ndarray, histogram_b: np.ndarray) -> float:
    """1-Wasserstein distance between two histograms on the same bin centres (intensity units)."""
    if not histogram_a.sum() or not histogram_b.sum():
        return float("nan")
    return float(stats.wasserstein_distance(centres, centres, histogram_a, histogram_b))


def evenly_spaced(count: int, limit: int = MAX_SAMPLE) -> np.ndarray:
    """Indices of an evenly spaced subsample of at most `limit` of `count` sorted items (deterministic)."""
    if count <= limit:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(int))


def _kernel(pooled: np.ndarray) -> np.ndarray:
    distances = pdist(pooled, "sqeuclidean")
    bandwidth2 = float(np.median(distances)) if distances.size and np.median(distances) > 0 else 1.0
    return np.exp(-cdist(pooled, pooled, "sqeuclidean") / bandwidth2)


def _mmd2(kernel: np.ndarray, in_x: np.ndarray) -> float:
    """Unbiased MMD^2 from the pooled kernel matrix and a boolean membership of the first sample."""
    m, n = int(in_x.sum()), int((~in_x).sum())
    kxx = kernel[np.ix_(in_x, in_x)]
    kyy = kernel[np.ix_(~in_x, ~in_x)]
    kxy = kernel[np.ix_(in_x, ~in_x)]
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())  # fmt: skip


def standardise(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both samples z-scored with the pooled mean and SD (constant features dropped)."""
    pooled = np.vstack([x, y]).astype(float)
    sd = pooled.std(axis=0)
    keep = sd > 0
    mean = pooled.mean(axis=0)
    return (x[:, keep] - mean[keep]) / sd[keep], (y[:, keep] - mean[keep]) / sd[keep]


def mmd_test(x: np.ndarray, y: np.ndarray, *, permutations: int = PERMUTATIONS, seed: int = 0) -> dict[str, Any]:
    """MMD^2 between samples x (m x d) and y (n x d) of standardised features, with its permutation p-value."""
    if len(x) < 2 or len(y) < 2:
        return {"mmd2": float("nan"), "p_value": float("nan"), "n_reference": len(x), "n_compared": len(y),
                "permutations": 0}  # fmt: skip
    zx, zy = standardise(np.asarray(x), np.asarray(y))
    kernel = _kernel(np.vstack([zx, zy]))
    membership = np.r_[np.ones(len(x), bool), np.zeros(len(y), bool)]
    observed = _mmd2(kernel, membership)
    rng = np.random.default_rng(seed)
    exceed = sum(_mmd2(kernel, rng.permutation(membership)) >= observed - 1e-15 for _ in range(permutations))
    return {"mmd2": observed, "p_value": (1 + exceed) / (1 + permutations), "n_reference": len(x),
            "n_compared": len(y), "permutations": permutations}  # fmt: skip


def rank_agreement(distances: list[float], drops: list[float]) -> dict[str, Any]:
    """Do the distances order the domains as the AUC drops do? Spearman's rho and an exact-order flag."""
    d, a = np.asarray(distances, float), np.asarray(drops, float)
    ok = np.isfinite(d) & np.isfinite(a)
    if ok.sum() < 2:
        return {"same_order": None, "spearman": float("nan"), "domains": int(ok.sum())}
    same = bool((np.argsort(d[ok], kind="stable") == np.argsort(a[ok], kind="stable")).all())
    rho = float(stats.spearmanr(d[ok], a[ok]).statistic) if ok.sum() > 2 else (1.0 if same else -1.0)
    return {"same_order": same, "spearman": rho, "domains": int(ok.sum())}
