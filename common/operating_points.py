"""Operating points screening programmes quote, and the precision-recall view of a 25%-positive test set.

Two readings of "sensitivity at 90% specificity", both reported because they answer different questions:
* `on test` - read off the empirical test ROC: the highest sensitivity among thresholds whose test
  specificity is at least the target (no interpolation), with a percentile bootstrap CI (patients resampled).
  It describes the curve; it is not achievable without knowing the test labels.
* `validation threshold` - the threshold is fixed on the validation split (the lowest validation score
  threshold reaching the target) and applied unchanged to test: the sensitivity and specificity actually
  achieved, with Wilson CIs. This is what a screening programme would get.
AUPRC is scikit-learn's average precision (step-wise, no interpolation) with a patient bootstrap CI; its
chance level is the prevalence.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve

from common import metrics

TARGETS = (0.80, 0.90)
NAN = float("nan")
_NO_POINT = {"sensitivity": NAN, "sensitivity_ci95": [NAN, NAN], "specificity": NAN, "specificity_ci95": [NAN, NAN]}


def _roc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Every ROC vertex from (0, 0), one per distinct threshold (common.metrics.roc_points, equal to
    scikit-learn's roc_curve without dropped points but fast enough for thousands of bootstrap replicates)."""
    return metrics.roc_points(np.asarray(labels).astype(int), np.asarray(scores, dtype=float))


def sensitivity_at_specificity(labels: npt.ArrayLike, scores: npt.ArrayLike, target: float) -> float:
    fpr, tpr = _roc(labels, scores)
    return float(tpr[fpr <= 1 - target + 1e-12].max())


def specificity_at_sensitivity(labels: npt.ArrayLike, scores: npt.ArrayLike, target: float) -> float:
    fpr, tpr = _roc(labels, scores)
    return float(1 - fpr[tpr >= target - 1e-12].min())


def auprc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    y = np.asarray(labels).astype(int)
    return float(average_precision_score(y, np.asarray(scores, dtype=float))) if y.any() else float("nan")


def average_precision(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """scikit-learn's average precision, sum over distinct thresholds of (recall step) x precision, in numpy:
    the bootstrap calls it thousands of times and sklearn's input validation dominates there."""
    _, tp, fp = metrics.threshold_sweep(labels, scores)
    recall = tp / tp[-1]
    precision = tp / (tp + fp)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def pr_curve(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) for the figure, from scikit-learn."""
    precision, recall, _ = precision_recall_curve(np.asarray(labels).astype(int), np.asarray(scores, dtype=float))
    return recall, precision


def bootstrap_ci(statistic: Callable[[np.ndarray, np.ndarray], float], labels: npt.ArrayLike, scores: npt.ArrayLike,
                 groups: npt.ArrayLike, *, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of statistic(y, s) over patient resamples (common.metrics.bootstrap_replicates)."""
    y = np.asarray(labels).astype(int)
    if y.min() == y.max():
        return (float("nan"), float("nan"))
    replicates = metrics.bootstrap_replicates(statistic, y, scores, n_boot=n_boot, seed=seed, groups=groups)
    low, high = metrics.percentile_interval(replicates, level)
    return (float(low), float(high))


def validation_threshold(labels: npt.ArrayLike, scores: npt.ArrayLike, target: float, kind: str) -> float:
    """Lowest validation threshold (predict positive when score >= t) whose validation specificity
    (kind "specificity") or sensitivity (kind "sensitivity") reaches the target.

    For a specificity target the lowest such threshold gives the most sensitivity; for a sensitivity target
    the highest threshold still reaching it gives the most specificity. When only calling nothing positive
    reaches the target, the threshold lies just above the highest validation score.
    """
    y, s = np.asarray(labels).astype(bool), np.asarray(scores, dtype=float)
    if y.all() or not y.any():
        return float("nan")
    candidates = np.r_[np.unique(s), np.nextafter(s.max(), np.inf)]  # the last: nothing on validation positive
    if kind == "specificity":
        spec = np.array([(s[~y] < t).mean() for t in candidates])
        return float(candidates[np.flatnonzero(spec >= target - 1e-12)[0]])
    if kind == "sensitivity":
        sens = np.array([(s[y] >= t).mean() for t in candidates])
        return float(candidates[np.flatnonzero(sens >= target - 1e-12)[-1]])
    raise ValueError(f"kind must be specificity or sensitivity, not {kind!r}")


def assess(frame: pd.DataFrame, *, n_boot: int, seed: int) -> dict[str, Any]:
    """Operating points and AUPRC of one row's test split; thresholds of the second reading from validation."""
    validation = frame[frame["split"] == "validation"]
    test = frame[frame["split"] == "test"]
    y, s = test["label"].to_numpy().astype(int), test["score"].to_numpy(float)
    groups = test["patient_id"].to_numpy() if "patient_id" in test else np.arange(len(test))
    ci = {"n_boot": n_boot, "seed": seed}
    result: dict[str, Any] = {
        "n": int(len(test)), "n_pos": int(y.sum()), "prevalence": float(y.mean()) if len(y) else float("nan"),
        "auprc": auprc(y, s), "auprc_ci95": list(bootstrap_ci(average_precision, y, s, groups, **ci)), "points": [],
    }  # fmt: skip
    if y.min() == y.max():
        return result
    for kind, statistic, other in (("specificity", sensitivity_at_specificity, "sensitivity"),
                                   ("sensitivity", specificity_at_sensitivity, "specificity")):  # fmt: skip
        for target in TARGETS:
            at_target = partial(statistic, target=target)
            threshold = validation_threshold(validation["label"], validation["score"], target, kind)
            binary = metrics.binary_metrics(y, s, threshold) if np.isfinite(threshold) else _NO_POINT
            result["points"].append({
                "fixed": kind, "target": target, "reported": other, "on_test": at_target(y, s),
                "on_test_ci95": list(bootstrap_ci(at_target, y, s, groups, **ci)), "validation_threshold": threshold,
                **{f"achieved_{name}": binary[name] for name in ("sensitivity", "specificity")},
                **{f"achieved_{name}_ci95": binary[f"{name}_ci95"] for name in ("sensitivity", "specificity")},
            })  # fmt: skip
    return result
