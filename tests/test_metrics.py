"""Metrics against independent computations: scikit-learn, brute-force loops, published Wilson values."""

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from common import metrics


def _random_scores(seed, n=120, ties=False):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    y[:2] = [True, False]
    s = rng.normal(size=n) + 0.8 * y
    if ties:
        s = np.round(s, 1)
    return y.astype(int), s


@pytest.mark.parametrize("ties", [False, True])
def test_auc_equals_sklearn(ties):
    for seed in range(5):
        y, s = _random_scores(seed, ties=ties)
        assert metrics.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_bootstrap_matches_brute_force_with_sklearn():
    y, s = _random_scores(7, n=40)
    rng = np.random.default_rng(3)
    aucs = []
    while len(aucs) < 300:
        idx = rng.integers(0, len(y), size=len(y))
        if len(set(y[idx])) < 2:
            continue
        aucs.append(roc_auc_score(y[idx], s[idx]))
    expected = np.percentile(aucs, [2.5, 97.5])
    got = metrics.bootstrap_auc_ci(y, s, n_boot=300, seed=3)
    assert got == pytest.approx(tuple(expected), abs=1e-12)


def test_bootstrap_resamples_whole_patients():
    """With groups, each replicate holds whole patients: four identical images per patient behave as one."""
    y, s = _random_scores(11, n=30)
    patients = np.repeat(np.arange(30), 4)
    ci_grouped = metrics.bootstrap_auc_ci(np.repeat(y, 4), np.repeat(s, 4), n_boot=400, seed=5, groups=patients)
    ci_single = metrics.bootstrap_auc_ci(y, s, n_boot=400, seed=5)
    assert ci_grouped == pytest.approx(ci_single, abs=1e-12)
    ci_naive = metrics.bootstrap_auc_ci(np.repeat(y, 4), np.repeat(s, 4), n_boot=400, seed=5)
    assert (ci_naive[1] - ci_naive[0]) < (ci_grouped[1] - ci_grouped[0])


def _brute_gmean(y, s):
    best_t, best_g = None, -1.0
    for t in sorted(set(s), reverse=True):
        pred = [v >= t for v in s]
        tp = sum(p and lab for p, lab in zip(pred, y, strict=True))
        tn = sum((not p) and (not lab) for p, lab in zip(pred, y, strict=True))
        g = np.sqrt(tp / sum(y) * tn / (len(y) - sum(y)))
        if g > best_g + 1e-12:
            best_t, best_g = t, g
    return best_t


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 20)), min_size=4, max_size=40))
def test_gmean_threshold_equals_brute_force(pairs):
    y = [p[0] for p in pairs]
    if all(y) or not any(y):
        return
    s = [p[1] / 20 for p in pairs]
    assert metrics.gmean_threshold(y, s) == _brute_gmean(y, s)


def test_threshold_never_comes_from_test_split():
    y, s = _random_scores(2, n=200)
    frame = pd.DataFrame({"patient_id": np.arange(200), "label": y, "score": s})
    frame["split"] = np.where(np.arange(200) < 100, "validation", "test")
    before = metrics.evaluate(frame, level="patient", n_boot=50, seed=0)
    flipped = frame.copy()
    test_rows = flipped["split"] == "test"
    flipped.loc[test_rows, "label"] = 1 - flipped.loc[test_rows, "label"]
    after = metrics.evaluate(flipped, level="patient", n_boot=50, seed=0)
    assert before["threshold"] == after["threshold"]
    assert before["threshold"] == metrics.gmean_threshold(y[:100], s[:100])
    assert after["auc"] == pytest.approx(1 - before["auc"])


def test_evaluate_record_fields_and_values():
    y, s = _random_scores(4, n=300)
    frame = pd.DataFrame({"patient_id": np.arange(300) // 4, "label": y, "score": s})
    frame["split"] = np.where(np.arange(300) < 100, "validation", "test")
    record = metrics.evaluate(frame, level="image", n_boot=200, seed=1)
    test = frame[frame["split"] == "test"]
    assert record["auc"] == pytest.approx(roc_auc_score(test["label"], test["score"]))
    lo, hi = record["auc_ci95"]
    assert lo < record["auc"] < hi
    predicted = test["score"] >= record["threshold"]
    assert record["sensitivity"] == pytest.approx(predicted[test["label"] == 1].mean())
    assert record["specificity"] == pytest.approx((~predicted)[test["label"] == 0].mean())
    assert record["n"] == 200 and record["n_pos"] == int(test["label"].sum())
    assert record["bootstrap"]["unit"] == "patient"


def test_wilson_matches_published_values():
    # Newcombe (1998), Table I: 0/10 -> 0.0000-0.2775; 5/10 -> 0.2366-0.7634 (Wilson score, no correction).
    assert metrics.wilson_ci(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert metrics.wilson_ci(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)


def _delong_brute(y, sa, sb):
    """DeLong et al. 1988 written out with explicit pairwise kernels."""
    pos = [i for i, v in enumerate(y) if v]
    neg = [i for i, v in enumerate(y) if not v]

    def psi(a, b):
        return 1.0 if a > b else 0.5 if a == b else 0.0

    comps = []
    for s in (sa, sb):
        v10 = [np.mean([psi(s[i], s[j]) for j in neg]) for i in pos]
        v01 = [np.mean([psi(s[i], s[j]) for i in pos]) for j in neg]
        comps.append((np.mean(v10), np.array(v10), np.array(v01)))
    (a1, x1, y1), (a2, x2, y2) = comps
    m, n = len(pos), len(neg)
    cov = lambda u, v: np.sum((u - u.mean()) * (v - v.mean())) / (len(u) - 1)  # noqa: E731
    var = (cov(x1, x1) + cov(x2, x2) - 2 * cov(x1, x2)) / m + (cov(y1, y1) + cov(y2, y2) - 2 * cov(y1, y2)) / n
    from scipy.stats import norm

    return a1, a2, 2 * norm.sf(abs(a1 - a2) / np.sqrt(var)), (cov(x1, x1) / m + cov(y1, y1) / n)


def test_delong_equals_brute_force():
    y, sa = _random_scores(9, n=60, ties=True)
    sb = sa + np.random.default_rng(1).normal(scale=0.8, size=len(sa))
    a1, a2, p, var_a = _delong_brute(list(y), list(sa), list(sb))
    got = metrics.delong_test(y, sa, sb)
    assert got == pytest.approx((a1, a2, p), abs=1e-10)
    lo, hi = metrics.delong_ci(y, sa)
    assert (hi - lo) / 2 == pytest.approx(1.959964 * np.sqrt(var_a), rel=1e-5)


def test_patient_scores_rules():
    frame = pd.DataFrame(
        {
            "patient_id": ["a"] * 4 + ["b"] * 4,
            "split": ["test"] * 8,
            "label": [0, 1, 0, 0, 0, 0, 0, 0],
            "score": [0.1, 0.9, 0.2, 0.4, 0.3, 0.3, 0.5, 0.1],
        }
    )
    by_max = metrics.patient_scores(frame, "max").set_index("patient_id")
    by_mean = metrics.patient_scores(frame, "mean").set_index("patient_id")
    assert by_max.loc["a", "score"] == 0.9 and by_max.loc["a", "label"] == 1
    assert by_mean.loc["b", "score"] == pytest.approx(0.3)
    assert by_max.loc["b", "label"] == 0


def test_single_class_is_reported_not_crashed():
    assert np.isnan(metrics.roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="both classes"):
        metrics.gmean_threshold([0, 0], [0.1, 0.2])
    assert all(np.isnan(metrics.bootstrap_auc_ci([0, 0], [0.1, 0.2], n_boot=5, seed=0)))
    assert list(itertools.chain(metrics.wilson_ci(0, 0)))[0] != 0  # NaN, never a fake 0


def test_roc_area_equals_the_mann_whitney_auc_with_ties():
    from common.metrics import roc_area

    rng = np.random.default_rng(21)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        y[:2] = (0, 1)
        s = np.round(rng.normal(size=40) + y, 1)
        assert roc_area(y, s) == pytest.approx(metrics.roc_auc(y, s), abs=1e-12)
