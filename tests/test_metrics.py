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


@pytest.mark.parametrize("ties", [False, True])
def test_threshold_sweep_is_scikit_learns_roc_without_dropped_points(ties):
    from sklearn.metrics import roc_curve

    for seed in range(4):
        y, s = _random_scores(seed, n=60, ties=ties)
        thresholds, tp, fp = metrics.threshold_sweep(y, s)
        fpr, tpr, sk_thresholds = roc_curve(y, s, drop_intermediate=False)
        assert np.array_equal(thresholds, sk_thresholds[1:])  # sklearn starts with an extra +inf
        assert np.allclose(tp / y.sum(), tpr[1:]) and np.allclose(fp / (1 - y).sum(), fpr[1:])
        brute_tp = [int(((s >= t) & (y == 1)).sum()) for t in thresholds]
        assert tp.tolist() == brute_tp


def test_one_bootstrap_behind_the_auc_interval_and_the_roc_band():
    """The report's band and the tabulated interval resample the same cases: each band replicate's curve has
    the AUC of the interval's replicate with the same index."""
    from common.report.figures import FPR_GRID, Curve, roc_band

    y, s = _random_scores(4, n=50)
    groups = np.repeat(np.arange(25), 2)
    aucs = metrics.bootstrap_replicates(metrics.roc_area, y, s, n_boot=50, seed=9, groups=groups)
    curves = []
    metrics.bootstrap_replicates(lambda yb, sb: curves.append(metrics.roc_points(yb, sb)), y, s, n_boot=50, seed=9,
                                 groups=groups)  # fmt: skip
    for auc, (fpr, tpr) in zip(aucs, curves, strict=True):
        assert np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2 == pytest.approx(auc, abs=1e-12)
    low, high = roc_band(Curve("m", y, s, groups), n_boot=50, seed=9)
    on_grid = np.array([np.interp(FPR_GRID, fpr, tpr) for fpr, tpr in curves])
    tail = (1 - 0.95) / 2 * 100  # 2.5000000000000022, as the percentile interval computes it
    assert np.array_equal(low, np.percentile(on_grid, tail, axis=0))
    assert np.array_equal(high, np.percentile(on_grid, 100 - tail, axis=0))
    assert metrics.bootstrap_auc_ci(y, s, n_boot=50, seed=9, groups=groups) == tuple(
        np.percentile(aucs, [tail, 100 - tail]))


def _scores(rows):
    return pd.DataFrame(rows, columns=["image_id", "patient_id", "split", "label", "score"])


def test_paired_test_scores_pairs_shared_cases_and_counts_what_it_left_out():
    a = _scores([("i1", "p1", "test", 1, 0.9), ("i2", "p1", "test", 0, 0.2), ("i3", "p2", "test", 0, 0.4),
                 ("i4", "p2", "test", 1, 0.7), ("v1", "p3", "validation", 1, 0.5)])  # fmt: skip
    b = _scores([("i4", "p2", "test", 1, 0.6), ("i2", "p1", "test", 1, 0.3), ("i1", "p1", "test", 1, 0.8)])
    paired = metrics.paired_test_scores(a, b, level="image")
    # by hand: shared test ids i1, i2, i4 (in a's order); i2's labels conflict; i3 only in a
    assert (paired.n_a, paired.n_b, paired.shared, paired.conflicting, paired.unshared) == (4, 3, 3, 1, 1)
    assert paired.labels.tolist() == [1, 1] and paired.scores_a.tolist() == [0.9, 0.7]
    assert paired.scores_b.tolist() == [0.8, 0.6]
    assert paired.note == ("1 test case(s) scored by only one model left out; "
                           "1 case(s) with conflicting labels left out")  # fmt: skip
    by_patient = metrics.paired_test_scores(a, b, level="patient")  # max over views, label = any positive
    assert by_patient.scores_a.tolist() == [0.9, 0.7] and by_patient.scores_b.tolist() == [0.8, 0.6]
    assert by_patient.note == ""
    with pytest.raises(ValueError):  # an id scored twice cannot be paired
        metrics.paired_test_scores(pd.concat([a, a]), b, level="image")


def test_the_gate_refuses_what_the_report_only_notes():
    from common.artifacts import UnusableInput
    from common.retraining import locked_test_pairs

    full = _scores([(f"i{k}", f"p{k}", "test", k % 2, k / 10) for k in range(6)])
    assert locked_test_pairs(full, full.assign(score=1 - full["score"])).shared == 6
    with pytest.raises(UnusableInput, match="champion scored 6 test images, challenger 5, only 5 shared"):
        locked_test_pairs(full, full.iloc[1:])
    with pytest.raises(UnusableInput, match="disagree on test labels"):
        locked_test_pairs(full, full.assign(label=1 - full["label"]))


def test_all_resamples_auc_at_once_equals_one_sort_per_resample_with_ties():
    """bootstrap_aucs (weighted Mann-Whitney over the draw counts) against roc_area on each resample spelled out,
    on scores with many ties and patients of four images."""
    y, s = _random_scores(8, n=80, ties=True)
    groups = np.repeat(np.arange(20), 4)
    counts = metrics.bootstrap_counts(y, n_boot=40, seed=2, groups=groups)
    assert counts.shape == (40, 80) and (counts.sum(axis=1) == 80).all()
    assert all(len(set(row[groups == g])) == 1 for row in counts for g in range(20))  # whole patients drawn
    spelled = [metrics.roc_area(np.repeat(y, row), np.repeat(s, row)) for row in counts]
    np.testing.assert_allclose(metrics.bootstrap_aucs(y, s, counts), spelled, atol=1e-12)
