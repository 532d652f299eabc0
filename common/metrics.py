"""Evaluation statistics as the thesis reports them, plus the paired tests it lacked.

Protocol (thesis 4.6): the decision threshold maximises G-mean = sqrt(sensitivity x specificity) on
the *validation* split and is then frozen and applied to the *test* split; AUC on test carries a 95%
nonparametric bootstrap CI (percentile interval, resampling with replacement). At patient level the
unit of resampling is the patient. DeLong's method gives an analytic CI and the paired comparison of
two models scored on the same cases.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

Z95 = 1.959963984540054


def roc_auc(labels, scores) -> float:
    """Mann-Whitney estimate of the AUC (ties count one half); NaN when a class is absent."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_points(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct score threshold, from (0, 0) to (1, 1); vectorised because the
    bootstrap band calls it thousands of times."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order].astype(bool)
    last = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), len(s_sorted) - 1]
    tp = np.cumsum(y_sorted)[last]
    fp = last + 1 - tp
    return np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]]


def roc_area(y: np.ndarray, s: np.ndarray) -> float:
    """The same AUC as `roc_auc` (ties count one half) as the trapezoid area under `roc_points`: pure numpy,
    several times faster than ranking, which matters inside bootstraps."""
    fpr, tpr = roc_points(y, s)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2)


def bootstrap_auc_ci(
    labels, scores, *, n_boot: int, seed: int, groups=None, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the AUC.

    With `groups`, whole groups (patients) are resampled so correlated images of one patient never
    count as independent evidence. Resamples that miss a class are redrawn rather than dropped, so the
    interval always rests on `n_boot` valid replicates.
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=float)
    if y.all() or not y.any():
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    if groups is None:
        members = [np.array([i]) for i in range(len(y))]
    else:
        codes, uniques = pd.factorize(pd.Series(groups))
        members = [np.flatnonzero(codes == g) for g in range(len(uniques))]
    aucs = np.empty(n_boot)
    done = 0
    while done < n_boot:
        picks = rng.integers(0, len(members), size=len(members))
        index = np.concatenate([members[p] for p in picks])
        yb = y[index]
        if yb.all() or not yb.any():
            continue
        aucs[done] = roc_area(yb, s[index])
        done += 1
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(aucs, [tail, 100 - tail])
    return (float(lo), float(hi))


def gmean_threshold(labels, scores) -> float:
    """Score threshold (predict positive when score >= t) that maximises sqrt(sens x spec).

    Candidates are the observed scores; on ties of G-mean the higher threshold wins (fewer recalls).
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=float)
    if y.all() or not y.any():
        raise ValueError("G-mean threshold needs both classes in the validation split")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    last_of_value = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    thresholds = s_sorted[last_of_value]
    sens = tp[last_of_value] / y.sum()
    spec = 1 - fp[last_of_value] / (~y).sum()
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


def binary_metrics(labels, scores, threshold: float) -> dict[str, Any]:
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


def delong_ci(labels, scores, level: float = 0.95) -> tuple[float, float]:
    """Asymptotic DeLong CI of one AUC, clipped to [0, 1]."""
    y = np.asarray(labels).astype(bool)
    if y.all() or not y.any():
        return (float("nan"), float("nan"))
    aucs, cov = _delong_cov(y, np.asarray(scores, dtype=float)[None, :])
    z = stats.norm.ppf(1 - (1 - level) / 2)
    half = z * np.sqrt(cov[0, 0])
    return (float(max(0.0, aucs[0] - half)), float(min(1.0, aucs[0] + half)))


def delong_test(labels, scores_a, scores_b) -> tuple[float, float, float]:
    """Two-sided DeLong test that two models scored on the same cases have equal AUC: (auc_a, auc_b, p)."""
    y = np.asarray(labels).astype(bool)
    sets = np.vstack([np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)])
    aucs, cov = _delong_cov(y, sets)
    variance = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    if variance <= 0:
        return float(aucs[0]), float(aucs[1]), 1.0
    z = (aucs[0] - aucs[1]) / np.sqrt(variance)
    return float(aucs[0]), float(aucs[1]), float(2 * stats.norm.sf(abs(z)))


def delong_difference_ci(labels, scores_a, scores_b, level: float = 0.95) -> tuple[float, float]:
    """CI of AUC_a - AUC_b; the non-inferiority gate compares its lower end with -margin."""
    y = np.asarray(labels).astype(bool)
    sets = np.vstack([np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)])
    aucs, cov = _delong_cov(y, sets)
    half = stats.norm.ppf(1 - (1 - level) / 2) * np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0))
    diff = aucs[0] - aucs[1]
    return (float(diff - half), float(diff + half))
