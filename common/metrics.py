"""Evaluation statistics as the thesis reports them, plus the paired tests it lacked.

Protocol (thesis 4.6): the decision threshold maximises G-mean = sqrt(sensitivity x specificity) on
the *validation* split and is then frozen and applied to the *test* split; AUC on test carries a 95%
nonparametric bootstrap CI (percentile interval, resampling with replacement). At patient level the
unit of resampling is the patient. DeLong's method gives an analytic CI and the paired comparison of
two models scored on the same cases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

Z95 = 1.959963984540054


def roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Mann-Whitney estimate of the AUC (ties count one half); NaN when a class is absent."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def threshold_sweep(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, true positives, false positives) when predicting positive at score >= t, for every distinct
    score t from the highest down (scikit-learn's `_binary_clf_curve`): the one sweep that the ROC, the G-mean
    threshold and the average precision read; vectorised because bootstraps call it thousands of times."""
    y, s = np.asarray(labels).astype(bool), np.asarray(scores, dtype=float)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), len(s_sorted) - 1]
    tp = np.cumsum(y_sorted)[last]
    return s_sorted[last], tp, last + 1 - tp


def roc_points(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct score threshold, from (0, 0) to (1, 1)."""
    _, tp, fp = threshold_sweep(y, s)
    return np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]]


def roc_area(y: np.ndarray, s: np.ndarray) -> float:
    """The same AUC as `roc_auc` (ties count one half) as the trapezoid area under `roc_points`: pure numpy,
    several times faster than ranking, which matters inside bootstraps."""
    fpr, tpr = roc_points(y, s)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2)


def bootstrap_counts(labels: npt.ArrayLike, *, n_boot: int, seed: int,
                     groups: npt.ArrayLike | None = None) -> np.ndarray:
    """How often each case is in each of `n_boot` resamples drawn with replacement (n_boot x cases): the one
    bootstrap behind the AUC interval, the report's ROC band and the operating-point intervals, so that they
    describe the same uncertainty.

    With `groups`, whole groups (patients) are resampled so correlated images of one patient never count as
    independent evidence. Resamples that miss a class are redrawn rather than dropped, so every result rests
    on `n_boot` valid replicates. The draws are made in blocks, which takes the generator's stream in the same
    order as one resample at a time.
    """
    y = np.asarray(labels).astype(bool)
    if y.all() or not y.any():
        raise ValueError("a bootstrap of a classifier needs both classes")
    codes = np.arange(len(y)) if groups is None else pd.factorize(pd.Series(groups))[0]
    n_groups = int(codes.max()) + 1
    positives = np.bincount(codes, weights=y, minlength=n_groups)
    negatives = np.bincount(codes, weights=~y, minlength=n_groups)
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    while (have := sum(len(block) for block in kept)) < n_boot:
        draws = rng.integers(0, n_groups, size=(n_boot - have, n_groups))
        rows = np.repeat(np.arange(len(draws)), n_groups)
        counts = np.bincount(rows * n_groups + draws.ravel(), minlength=len(draws) * n_groups).reshape(draws.shape)
        kept.append(counts[(counts @ positives > 0) & (counts @ negatives > 0)])
    return np.concatenate(kept)[:n_boot][:, codes]


def bootstrap_replicates(statistic: Callable[[np.ndarray, np.ndarray], Any], labels: npt.ArrayLike,
                         scores: npt.ArrayLike, *, n_boot: int, seed: int,
                         groups: npt.ArrayLike | None = None) -> np.ndarray:
    """`statistic(y, s)` on each resample of `bootstrap_counts`."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=float)
    cases = np.arange(len(y))
    values = []
    for counts in bootstrap_counts(y, n_boot=n_boot, seed=seed, groups=groups):
        index = np.repeat(cases, counts)
        values.append(statistic(y[index], s[index]))
    return np.asarray(values)


def bootstrap_aucs(labels: npt.ArrayLike, scores: npt.ArrayLike, counts: np.ndarray) -> np.ndarray:
    """`roc_area` of every resample in `counts` at once: the Mann-Whitney form of the trapezoid area, each case
    weighted by how often it was drawn (ties count one half), instead of one sort per resample."""
    y, s = np.asarray(labels).astype(bool), np.asarray(scores, dtype=float)
    order = np.argsort(s, kind="mergesort")
    starts = np.r_[0, np.flatnonzero(np.diff(s[order])) + 1]  # first case of each distinct score, ascending
    drawn = counts[:, order]
    pos = np.add.reduceat(drawn * y[order], starts, axis=1)  # resample x distinct score: positives drawn there
    neg = np.add.reduceat(drawn * ~y[order], starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    return (pos * (below + neg / 2)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> np.ndarray:
    """[low, high] percentile interval of bootstrap replicates (per column when each replicate is a vector)."""
    tail = (1 - level) / 2 * 100
    return np.percentile(replicates, [tail, 100 - tail], axis=0)


def bootstrap_auc_ci(
    labels: npt.ArrayLike, scores: npt.ArrayLike, *, n_boot: int, seed: int, groups: npt.ArrayLike | None = None,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the AUC (`bootstrap_counts`); NaN when a class is absent."""
    y = np.asarray(labels).astype(bool)
    if y.all() or not y.any():
        return (float("nan"), float("nan"))
    aucs = bootstrap_aucs(y, scores, bootstrap_counts(y, n_boot=n_boot, seed=seed, groups=groups))
    lo, hi = percentile_interval(aucs, level)
    return (float(lo), float(hi))


def gmean_threshold(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Score threshold (predict positive when score >= t) that maximises sqrt(sens x spec).

    Candidates are the observed scores; on ties of G-mean the higher threshold wins (fewer recalls).
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=float)
    if y.all() or not y.any():
        raise ValueError("G-mean threshold needs both classes in the validation split")
    thresholds, tp, fp = threshold_sweep(y, s)
    sens = tp / y.sum()
    spec = 1 - fp / (~y).sum()
    gmean = np.sqrt(sens * spec)
    best = np.flatnonzero(gmean >= gmean.max() - 1e-12)[0]
    return float(thresholds[best])


def wilson_ci(successes: int, trials: int) -> tuple[float, float]:
    """Wilson score interval: unlike the normal approximation it stays inside [0, 1] for small counts."""
    if trials == 0:
        return (float("nan"), float("nan"))
    p = successes / trials
    denom = 1 + Z95**2 / trials
    centre = (p + Z95**2 / (2 * trials)) / denom
    half = Z95 * np.sqrt(p * (1 - p) / trials + Z95**2 / (4 * trials**2)) / denom
    return (float(centre - half), float(centre + half))


def binary_metrics(labels: npt.ArrayLike, scores: npt.ArrayLike, threshold: float) -> dict[str, Any]:
    """Confusion counts, sensitivity, specificity and accuracy (with Wilson CIs) at a fixed threshold."""
    y = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores, dtype=float) >= threshold
    tp, fn = int((predicted & y).sum()), int((~predicted & y).sum())
    tn, fp = int((~predicted & ~y).sum()), int((predicted & ~y).sum())
    n_pos, n_neg = tp + fn, tn + fp
    return {
        "tp": tp,
        "fn": fn,
        "tn": tn,
        "fp": fp,
        "sensitivity": tp / n_pos if n_pos else float("nan"),
        "sensitivity_ci95": list(wilson_ci(tp, n_pos)),
        "specificity": tn / n_neg if n_neg else float("nan"),
        "specificity_ci95": list(wilson_ci(tn, n_neg)),
        "accuracy": (tp + tn) / len(y) if len(y) else float("nan"),
        "accuracy_ci95": list(wilson_ci(tp + tn, len(y))),
    }


def patient_scores(frame: pd.DataFrame, how: str = "max") -> pd.DataFrame:
    """Collapse image rows to one row per patient.

    `max` follows screening logic (a patient is as suspicious as her most suspicious view); `mean`
    is smoother but dilutes a unilateral cancer over four views. The label is the patient's: a case
    has at least one positive image.
    """
    if how not in {"max", "mean"}:
        raise ValueError(f"patient score rule must be max or mean, not {how!r}")
    grouped = frame.groupby("patient_id", sort=True)
    return pd.DataFrame(
        {
            "patient_id": grouped.size().index,
            "split": grouped["split"].first().to_numpy(),
            "label": grouped["label"].max().to_numpy(),
            "score": grouped["score"].agg(how).to_numpy(),
        }
    )


def evaluate(frame: pd.DataFrame, *, level: str, n_boot: int, seed: int) -> dict[str, Any]:
    """The `metrics.json` record: threshold from validation G-mean, everything else on test.

    `frame` needs columns split, label, score (and patient_id, used to resample patients when an
    image- or breast-level frame is bootstrapped, so that the CI respects within-patient correlation).
    """
    validation = frame[frame["split"] == "validation"]
    test = frame[frame["split"] == "test"]
    if test.empty:
        raise ValueError("no test rows to evaluate")
    threshold = gmean_threshold(validation["label"], validation["score"])
    groups = test["patient_id"].to_numpy() if level != "patient" and "patient_id" in test else None
    unit = "patient" if groups is not None or level == "patient" else "image"
    y, s = test["label"].to_numpy(), test["score"].to_numpy()
    auc = roc_auc(y, s)
    return {
        "level": level,
        "split": "test",
        "n": int(len(test)),
        "n_pos": int(test["label"].sum()),
        "auc": auc,
        "auc_ci95": list(bootstrap_auc_ci(y, s, n_boot=n_boot, seed=seed, groups=groups)),
        "auc_ci95_delong": list(delong_ci(y, s)),
        "bootstrap": {"n": n_boot, "seed": seed, "unit": unit},
        "threshold": threshold,
        "threshold_source": "validation-gmean",
        **binary_metrics(y, s, threshold),
    }


@dataclass(frozen=True)
class PairedScores:
    """Two models' test scores on the cases both scored, aligned by id, and what the pairing left out."""

    labels: np.ndarray
    scores_a: np.ndarray
    scores_b: np.ndarray
    n_a: int  # test cases model a scored
    n_b: int
    shared: int  # test cases both scored (conflicting ones included)
    conflicting: int  # shared cases whose two labels differ: left out of the arrays

    @property
    def unshared(self) -> int:
        """Test cases of the larger side that the other model did not score (left out)."""
        return max(self.n_a, self.n_b) - self.shared

    @property
    def note(self) -> str:
        notes = [f"{self.unshared} test case(s) scored by only one model left out"] if self.unshared else []
        if self.conflicting:
            notes.append(f"{self.conflicting} case(s) with conflicting labels left out")
        return "; ".join(notes)


def paired_test_scores(a: pd.DataFrame, b: pd.DataFrame, *, level: str, patient_rule: str = "max") -> PairedScores:
    """Labels and both score vectors of the test cases two scores.csv frames share, joined by image_id (by
    patient_id at patient level, an image-level frame first collapsed by `patient_rule`).

    It always pairs what can be paired and counts what it left out, never silently: a paired test answers
    for the shared cases only, so each caller decides what a left-out case means. The retraining gate
    refuses any (a champion must be judged on the whole locked test set); the report tests the shared cases
    and prints the note. An id scored twice on one side raises (pandas' MergeError, a ValueError).
    """
    key = "image_id" if level == "image" else "patient_id"
    sides = [_test_cases(frame, level, patient_rule) for frame in (a, b)]
    joined = sides[0].merge(sides[1], on=key, suffixes=("_a", "_b"), validate="one_to_one")
    disagree = joined["label_a"] != joined["label_b"]
    agreed = joined[~disagree]
    return PairedScores(agreed["label_a"].to_numpy().astype(int), agreed["score_a"].to_numpy(float),
                        agreed["score_b"].to_numpy(float), len(sides[0]), len(sides[1]), len(joined),
                        int(disagree.sum()))  # fmt: skip


def _test_cases(frame: pd.DataFrame, level: str, patient_rule: str) -> pd.DataFrame:
    if level == "patient" and "image_id" in frame.columns:
        frame = patient_scores(frame, how=patient_rule)
    key = "image_id" if level == "image" else "patient_id"
    return frame.loc[frame["split"] == "test", [key, "label", "score"]]


def _delong_components(y: np.ndarray, score_sets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-model AUCs and the structural components V10 (positives) and V01 (negatives) of DeLong et al. 1988."""
    pos, neg = score_sets[:, y], score_sets[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    v10 = np.empty((len(score_sets), m))
    v01 = np.empty((len(score_sets), n))
    for k, (p, q) in enumerate(zip(pos, neg, strict=True)):
        rank_all = stats.rankdata(np.r_[p, q])
        rank_p, rank_q = stats.rankdata(p), stats.rankdata(q)
        v10[k] = (rank_all[:m] - rank_p) / n
        v01[k] = 1 - (rank_all[m:] - rank_q) / m
    aucs = v10.mean(axis=1)
    return aucs, v10, v01


def _delong_cov(y: np.ndarray, score_sets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    aucs, v10, v01 = _delong_components(y, score_sets)
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return aucs, s10 / v10.shape[1] + s01 / v01.shape[1]


def delong_ci(labels: npt.ArrayLike, scores: npt.ArrayLike, level: float = 0.95) -> tuple[float, float]:
    """Asymptotic DeLong CI of one AUC, clipped to [0, 1]."""
    y = np.asarray(labels).astype(bool)
    if y.all() or not y.any():
        return (float("nan"), float("nan"))
    aucs, cov = _delong_cov(y, np.asarray(scores, dtype=float)[None, :])
    z = stats.norm.ppf(1 - (1 - level) / 2)
    half = z * np.sqrt(cov[0, 0])
    return (float(max(0.0, aucs[0] - half)), float(min(1.0, aucs[0] + half)))


def delong_test(labels: npt.ArrayLike, scores_a: npt.ArrayLike, scores_b: npt.ArrayLike) -> tuple[float, float, float]:
    """Two-sided DeLong test that two models scored on the same cases have equal AUC: (auc_a, auc_b, p)."""
    y = np.asarray(labels).astype(bool)
    sets = np.vstack([np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)])
    aucs, cov = _delong_cov(y, sets)
    variance = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    if variance <= 0:
        return float(aucs[0]), float(aucs[1]), 1.0
    z = (aucs[0] - aucs[1]) / np.sqrt(variance)
    return float(aucs[0]), float(aucs[1]), float(2 * stats.norm.sf(abs(z)))


def delong_difference_ci(labels: npt.ArrayLike, scores_a: npt.ArrayLike, scores_b: npt.ArrayLike,
                         level: float = 0.95) -> tuple[float, float]:
    """CI of AUC_a - AUC_b; the non-inferiority gate compares its lower end with -margin."""
    y = np.asarray(labels).astype(bool)
    sets = np.vstack([np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)])
    aucs, cov = _delong_cov(y, sets)
    half = stats.norm.ppf(1 - (1 - level) / 2) * np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0))
    diff = aucs[0] - aucs[1]
    return (float(diff - half), float(diff + half))
