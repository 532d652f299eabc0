"""Can a score be read as a probability? Reliability, Brier score, ECE, calibration slope and intercept,
and recalibration fitted on the validation split only.

Why: the End2End scores of the demo sit in a narrow band and the G-mean thresholds range from 0.03 to 0.70
across models, so a score of 0.5 means different things per model. A research group has to show how far
off the scores are (on test) and whether a monotone map learnt on validation fixes it.

Definitions (stated in the report):
* Reliability diagram and ECE: 10 equal-width bins on [0, 1] (`BINS`), a score s falls in bin
  min(floor(10 s), 9) - the binning of scikit-learn's `calibration_curve(strategy="uniform")`; empty bins are
  left out. ECE = sum over bins of n_b / N x |observed fraction - mean score|.
* Bands: pointwise 95% percentile bootstrap of each bin's observed fraction, whole patients resampled.
* Calibration slope: b of logit P(y=1) = a + b logit(s) (maximum likelihood, no penalty); 1 is ideal, < 1
  means scores too extreme, > 1 too timid. Calibration intercept (calibration-in-the-large): a of
  logit P(y=1) = a + logit(s) with the slope fixed at 1; 0 is ideal, > 0 means scores too low on average.
* Recalibration (scikit-learn, as CalibratedClassifierCV does it, but fitted on the validation split and
  never refitted): Platt = LogisticRegression on logit(s); isotonic = IsotonicRegression(out_of_bounds="clip").
  Both are applied unchanged to test. The decision threshold is again the validation G-mean of the
  recalibrated scores, so the threshold rule does not change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import optimize, special
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from common import metrics

BINS = 10
EPS = 1e-6
METHODS = ("platt", "isotonic")


def bin_index(scores: npt.ArrayLike, bins: int = BINS) -> np.ndarray:
    """Equal-width bin of each score on [0, 1] (scores outside are clipped)."""
    return np.minimum((np.clip(np.asarray(scores, dtype=float), 0.0, 1.0) * bins).astype(int), bins - 1)


def reliability(labels: npt.ArrayLike, scores: npt.ArrayLike, bins: int = BINS) -> pd.DataFrame:
    """Per non-empty bin: its range, count, mean score and observed fraction of positives."""
    y, s = np.asarray(labels, dtype=float), np.asarray(scores, dtype=float)
    index = bin_index(s, bins)
    counts = np.bincount(index, minlength=bins)
    mean_score = np.bincount(index, weights=s, minlength=bins)
    observed = np.bincount(index, weights=y, minlength=bins)
    keep = counts > 0
    return pd.DataFrame({
        "bin": np.flatnonzero(keep),
        "low": np.arange(bins)[keep] / bins,
        "high": (np.arange(bins)[keep] + 1) / bins,
        "n": counts[keep],
        "mean_score": mean_score[keep] / counts[keep],
        "observed": observed[keep] / counts[keep],
    })  # fmt: skip


def expected_calibration_error(labels: npt.ArrayLike, scores: npt.ArrayLike, bins: int = BINS) -> float:
    table = reliability(labels, scores, bins)
    return float((table["n"] * (table["observed"] - table["mean_score"]).abs()).sum() / table["n"].sum())


def brier(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    return float(brier_score_loss(np.asarray(labels).astype(int), np.clip(np.asarray(scores, dtype=float), 0, 1)))


def logit(scores: npt.ArrayLike) -> np.ndarray:
    return special.logit(np.clip(np.asarray(scores, dtype=float), EPS, 1 - EPS))


def calibration_slope(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Slope b of the logistic regression of the label on logit(score) (unpenalised maximum likelihood by
    Newton-Raphson on (a, b): two parameters, so no solver library is needed); NaN with one class only."""
    y = np.asarray(labels, dtype=float)
    if y.min() == y.max():
        return float("nan")
    x = np.column_stack([np.ones_like(y), logit(scores)])
    beta = np.zeros(2)
    for _ in range(100):
        p = special.expit(x @ beta)
        hessian = x.T @ (x * (p * (1 - p))[:, None])
        step = np.linalg.lstsq(hessian, x.T @ (y - p), rcond=None)[0]
        beta += step
        if not np.isfinite(beta).all() or np.abs(step).max() < 1e-10:
            break
    return float(beta[1]) if np.isfinite(beta).all() and np.abs(step).max() < 1e-6 else float("nan")  # nan: separable


def calibration_intercept(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Calibration-in-the-large: the a solving sum(y - expit(a + logit(s))) = 0, i.e. the maximum likelihood
    intercept with logit(s) as a fixed offset (the score equation is monotone in a, so a root bracket works)."""
    y = np.asarray(labels, dtype=float)
    if y.min() == y.max():
        return float("nan")
    offset = logit(scores)
    return float(optimize.brentq(lambda a: float(np.sum(y - special.expit(a + offset))), -50.0, 50.0, xtol=1e-10))


def reliability_band(labels: npt.ArrayLike, scores: npt.ArrayLike, groups: npt.ArrayLike, *, n_boot: int, seed: int,
                     bins: int = BINS,
                     level: float = 0.95) -> pd.DataFrame:  # fmt: skip
    """Pointwise percentile band of each bin's observed fraction, resampling whole patients (`groups`).

    A bin that a replicate leaves empty does not count for that bin; the band of a bin seen in fewer
    than half of the replicates is NaN (too thin to draw).
    """
    y, s = np.asarray(labels, dtype=float), np.asarray(scores, dtype=float)
    index = bin_index(s, bins)
    codes, uniques = pd.factorize(pd.Series(groups))
    # Per patient and bin: image count and positive count; a replicate is a weighted sum of patients.
    counts = np.zeros((len(uniques), bins))
    positives = np.zeros((len(uniques), bins))
    np.add.at(counts, (codes, index), 1.0)
    np.add.at(positives, (codes, index), y)
    rng = np.random.default_rng(seed)
    weights = np.stack([np.bincount(rng.integers(0, len(uniques), len(uniques)), minlength=len(uniques))
                        for _ in range(n_boot)])  # fmt: skip
    n_b, pos_b = weights @ counts, weights @ positives
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(n_b > 0, pos_b / n_b, np.nan)
    tail = (1 - level) / 2 * 100
    low, high = np.full(bins, np.nan), np.full(bins, np.nan)
    wide = np.isfinite(fraction).sum(axis=0) >= n_boot / 2
    if wide.any():
        low[wide] = np.nanpercentile(fraction[:, wide], tail, axis=0)
        high[wide] = np.nanpercentile(fraction[:, wide], 100 - tail, axis=0)
    present = np.bincount(index, minlength=bins) > 0
    return pd.DataFrame({"bin": np.flatnonzero(present), "band_low": low[present], "band_high": high[present]})


def summary(labels: npt.ArrayLike, scores: npt.ArrayLike, bins: int = BINS) -> dict[str, float]:
    return {
        "brier": brier(labels, scores),
        "ece": expected_calibration_error(labels, scores, bins),
        "slope": calibration_slope(labels, scores),
        "intercept": calibration_intercept(labels, scores),
    }


@dataclass(frozen=True)
class Recalibrator:
    """A monotone map from score to probability, fitted once on validation scores and labels."""

    method: str
    model: Any

    @classmethod
    def fit(cls, method: str, labels: npt.ArrayLike, scores: npt.ArrayLike) -> Recalibrator:
        y = np.asarray(labels).astype(int)
        if y.min() == y.max():
            raise ValueError("recalibration needs both classes in the validation split")
        if method == "platt":
            return cls(method, LogisticRegression(C=np.inf, solver="lbfgs", max_iter=1000)
                       .fit(logit(scores)[:, None], y))  # fmt: skip
        if method == "isotonic":
            return cls(method, IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
                       .fit(np.asarray(scores, dtype=float), y))  # fmt: skip
        raise ValueError(f"recalibration method must be one of {', '.join(METHODS)}, not {method!r}")

    def apply(self, scores: npt.ArrayLike) -> np.ndarray:
        if self.method == "platt":
            return self.model.predict_proba(logit(scores)[:, None])[:, 1]
        return self.model.predict(np.asarray(scores, dtype=float))

    def parameters(self) -> dict[str, Any]:
        """What was fitted, for summary.json (and for the test that test labels never reach it)."""
        if self.method == "platt":
            return {"coef": float(self.model.coef_[0, 0]), "intercept": float(self.model.intercept_[0])}
        return {"x": self.model.X_thresholds_.tolist(), "y": self.model.y_thresholds_.tolist()}


def assess(frame: pd.DataFrame, *, n_boot: int, seed: int, bins: int = BINS) -> dict[str, Any]:
    """Calibration of one row on test, before and after each recalibration fitted on validation.

    `frame` has split, label, score and patient_id (the bootstrap unit); only its validation rows reach
    `Recalibrator.fit`, the test rows are only transformed and scored.
    """
    validation = frame[frame["split"] == "validation"]
    test = frame[frame["split"] == "test"]
    y, s = test["label"].to_numpy().astype(int), test["score"].to_numpy(float)
    groups = test["patient_id"].to_numpy() if "patient_id" in test else np.arange(len(test))
    result: dict[str, Any] = {"bins": bins, "binning": f"{bins} equal-width bins on [0, 1]",
                              "n_validation": int(len(validation)), "n_test": int(len(test)),
                              "raw": {**_assessment(y, s, groups, n_boot=n_boot, seed=seed, bins=bins),
                                      **_decisions(validation["label"], validation["score"], y, s)}}  # fmt: skip
    for method in METHODS:
        try:
            fitted = Recalibrator.fit(method, validation["label"], validation["score"])
        except ValueError as error:
            result[method] = {"note": str(error)}
            continue
        calibrated = fitted.apply(s)
        result[method] = {
            "fitted_on": "validation",
            "parameters": fitted.parameters(),
            **_assessment(y, calibrated, groups, n_boot=n_boot, seed=seed, bins=bins),
            **_decisions(validation["label"], fitted.apply(validation["score"]), y, calibrated),
        }
    return result


def _decisions(val_y: npt.ArrayLike, val_s: npt.ArrayLike, y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """Test AUC, and sensitivity and specificity at the validation G-mean threshold of these scores."""
    try:
        threshold = metrics.gmean_threshold(val_y, val_s)
    except ValueError:
        return {"auc": metrics.roc_auc(y, s), "threshold": math.nan, "sensitivity": math.nan, "specificity": math.nan}
    binary = metrics.binary_metrics(y, s, threshold)
    return {"auc": metrics.roc_auc(y, s), "threshold": threshold, "sensitivity": binary["sensitivity"],
            "specificity": binary["specificity"]}  # fmt: skip


def _assessment(y: np.ndarray, s: np.ndarray, groups: npt.ArrayLike, *, n_boot: int, seed: int,
                bins: int) -> dict[str, Any]:
    curve = reliability(y, s, bins).merge(reliability_band(y, s, groups, n_boot=n_boot, seed=seed, bins=bins),
                                          on="bin")  # fmt: skip
    return {**summary(y, s, bins), "curve": curve.to_dict(orient="list")}
