"""The report's publication statistics against independent computations: scikit-learn's calibration_curve,
brier_score_loss and average_precision_score, and brute force on small data (breast aggregation,
operating points, MMD), plus the rule that recalibration never sees a test label."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, special
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, brier_score_loss

from common import calibration, cohort_summary, domain_shift, levels, metrics, operating_points, subgroups


def scored(seed: int, patients: int = 60, separation: float = 1.2) -> pd.DataFrame:
    """Four views per patient, odd patients have a left-sided cancer; 40/10/10 patients train/val/test."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(patients):
        split = "train" if p < 0.66 * patients else "validation" if p < 0.83 * patients else "test"
        for laterality, view in (("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO")):
            label = int(p % 2 == 1 and laterality == "L")
            rows.append({"image_id": f"P{p:03d}_{laterality}_{view}", "patient_id": f"P{p:03d}", "split": split,
                         "view": view, "laterality": laterality, "label": label})  # fmt: skip
    frame = pd.DataFrame(rows)
    frame["score"] = special.expit(separation * frame["label"] + rng.normal(0, 1, len(frame)) - 1.5)
    return frame


# ---------------------------------------------------------------- calibration


def test_reliability_bins_match_scikit_learn_calibration_curve():
    rng = np.random.default_rng(1)
    s = rng.beta(2, 5, 400)
    y = rng.uniform(size=400) < s**0.7
    table = calibration.reliability(y, s, bins=10)
    observed, predicted = calibration_curve(y, s, n_bins=10, strategy="uniform")
    np.testing.assert_allclose(table["observed"], observed)
    np.testing.assert_allclose(table["mean_score"], predicted)
    assert table["n"].sum() == 400


def test_ece_and_brier_by_brute_force():
    rng = np.random.default_rng(2)
    s = rng.uniform(size=37)
    y = (rng.uniform(size=37) < 0.4).astype(int)
    total = 0.0
    for b in range(10):
        inside = [(yi, si) for yi, si in zip(y, s, strict=True) if b / 10 <= si < (b + 1) / 10]
        if inside:
            total += len(inside) / 37 * abs(np.mean([i[0] for i in inside]) - np.mean([i[1] for i in inside]))
    assert calibration.expected_calibration_error(y, s) == pytest.approx(total)
    assert calibration.brier(y, s) == pytest.approx(np.mean((s - y) ** 2))
    assert calibration.brier(y, s) == pytest.approx(brier_score_loss(y, s))


def test_calibration_slope_and_intercept_are_the_maximum_likelihood_fits():
    rng = np.random.default_rng(3)
    s = rng.uniform(0.05, 0.95, 3000)
    truth = special.expit(0.4 + 0.5 * special.logit(s))  # scores too extreme and too low
    y = (rng.uniform(size=s.size) < truth).astype(int)
    lp = special.logit(s)

    def loglik(params, offset_only=False):
        a, b = (params[0], 1.0) if offset_only else params
        eta = a + b * lp
        return -np.sum(y * eta - np.logaddexp(0, eta))

    a_hat, b_hat = optimize.minimize(loglik, [0.0, 1.0], method="Nelder-Mead", options={"xatol": 1e-8}).x
    a_only = optimize.minimize_scalar(lambda a: loglik([a], True)).x
    assert calibration.calibration_slope(y, s) == pytest.approx(b_hat, abs=1e-3)
    assert calibration.calibration_intercept(y, s) == pytest.approx(a_only, abs=1e-5)
    assert calibration.calibration_slope(y, s) == pytest.approx(0.5, abs=0.1)  # and it recovers the truth


def test_reliability_band_covers_the_curve_and_resamples_patients():
    frame = scored(4, patients=120)
    test = frame[frame["split"] != "train"]
    band = calibration.reliability_band(test["label"], test["score"], test["patient_id"], n_boot=300, seed=1)
    table = calibration.reliability(test["label"], test["score"]).merge(band, on="bin")
    drawn = table.dropna()
    assert len(drawn) >= 3
    assert ((drawn["band_low"] <= drawn["observed"] + 1e-12) & (drawn["observed"] <= drawn["band_high"] + 1e-12)).all()
    # Patient resampling is wider than image resampling would be: images of one patient move together.
    by_image = calibration.reliability_band(test["label"], test["score"], np.arange(len(test)), n_boot=300, seed=1)
    assert (band["band_high"] - band["band_low"]).mean() >= 0.9 * (by_image["band_high"] - by_image["band_low"]).mean()


def test_recalibration_never_sees_test_labels():
    frame = scored(5)
    before = calibration.assess(frame, n_boot=50, seed=0)
    changed = frame.copy()
    test = changed["split"] == "test"
    changed.loc[test, "label"] = 1 - changed.loc[test, "label"]  # every test label flipped
    after = calibration.assess(changed, n_boot=50, seed=0)
    for method in calibration.METHODS:
        assert after[method]["parameters"] == before[method]["parameters"]
        assert after[method]["threshold"] == before[method]["threshold"]
        assert after[method]["brier"] != before[method]["brier"]  # the test labels are used to score, only
    # Changing a validation label does change the fit: the check above can fail.
    moved = frame.copy()
    first = moved.index[moved["split"] == "validation"][0]
    moved.loc[first, "label"] = 1 - moved.loc[first, "label"]
    assert calibration.assess(moved, n_boot=50, seed=0)["platt"]["parameters"] != before["platt"]["parameters"]


def test_recalibration_fixes_a_miscalibrated_model_on_test():
    rng = np.random.default_rng(6)
    frame = scored(6, patients=400, separation=0.0)
    truth = rng.uniform(0.05, 0.6, len(frame))
    frame["label"] = (rng.uniform(size=len(frame)) < truth).astype(int)
    frame["score"] = special.expit(0.3 * special.logit(truth) + 1.0)  # squeezed and shifted
    result = calibration.assess(frame, n_boot=20, seed=0)
    assert result["raw"]["ece"] > 0.1
    for method in calibration.METHODS:
        assert result[method]["ece"] < result["raw"]["ece"] / 2
        assert result[method]["brier"] < result["raw"]["brier"]
    assert result["platt"]["auc"] == pytest.approx(metrics.roc_auc(*_test(frame)))  # monotone: same AUC


def _test(frame):
    test = frame[frame["split"] == "test"]
    return test["label"].to_numpy(), test["score"].to_numpy()


# ---------------------------------------------------------------- levels


def test_breast_and_exam_aggregation_by_brute_force():
    frame = scored(7, patients=12)
    for how, reduce in (("max", max), ("mean", lambda v: sum(v) / len(v))):
        breasts = levels.breast_scores(frame, how).set_index("breast_id")

        def side(r):
            return (r.patient_id, r.laterality)

        for (patient, laterality), rows in itertools.groupby(sorted(frame.itertuples(), key=side), key=side):
            rows = list(rows)
            assert breasts.loc[f"{patient}_{laterality}", "score"] == pytest.approx(reduce([r.score for r in rows]))
            assert breasts.loc[f"{patient}_{laterality}", "label"] == max(r.label for r in rows)
    assert len(levels.breast_scores(frame)) == 24 and levels.breast_scores(frame)["label"].sum() == 6


def test_every_level_has_its_own_validation_threshold_and_patient_resampling():
    frame = scored(8, patients=80)
    records = {(r["level"], r["rule"]): r for r in levels.evaluate_levels(frame, "image", n_boot=80, seed=3)}
    assert set(records) == {("image", "-"), ("breast", "max"), ("breast", "mean"), ("exam", "max"), ("exam", "mean")}
    breasts = levels.breast_scores(frame, "mean")
    validation = breasts[breasts["split"] == "validation"]
    assert records[("breast", "mean")]["threshold"] == metrics.gmean_threshold(validation["label"], validation["score"])
    test = breasts[breasts["split"] == "test"]
    assert records[("breast", "mean")]["auc"] == pytest.approx(metrics.roc_auc(test["label"], test["score"]))
    expected_ci = metrics.bootstrap_auc_ci(test["label"], test["score"], n_boot=80, seed=3, groups=test["patient_id"])
    assert records[("breast", "mean")]["auc_ci95"] == pytest.approx(list(expected_ci))
    assert records[("exam", "max")]["n"] == frame.loc[frame["split"] == "test", "patient_id"].nunique()
    patient_only = levels.evaluate_levels(metrics.patient_scores(frame), "patient", n_boot=20, seed=0)
    assert [(r["level"], r["rule"]) for r in patient_only] == [("exam", "patient-level model")]


# ---------------------------------------------------------------- operating points


def _brute_sens_at_spec(y, s, target):
    best = 0.0
    for t in [*sorted(set(s)), np.inf]:
        predicted = s >= t
        spec = np.mean(~predicted[y == 0])
        if spec >= target:
            best = max(best, np.mean(predicted[y == 1]))
    return best


def _brute_spec_at_sens(y, s, target):
    best = 0.0
    for t in [*sorted(set(s)), np.inf]:
        predicted = s >= t
        if np.mean(predicted[y == 1]) >= target:
            best = max(best, np.mean(~predicted[y == 0]))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_operating_points_by_brute_force(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 23)
    y[:2] = (0, 1)
    s = np.round(rng.normal(size=23) + y, 1)  # ties on purpose
    for target in operating_points.TARGETS:
        sens = operating_points.sensitivity_at_specificity(y, s, target)
        spec = operating_points.specificity_at_sensitivity(y, s, target)
        assert sens == pytest.approx(_brute_sens_at_spec(y, s, target))
        assert spec == pytest.approx(_brute_spec_at_sens(y, s, target))


def _brute_average_precision(y, s):
    """AP = sum over distinct thresholds of (recall step) x precision, the definition written out."""
    total, previous_recall = 0.0, 0.0
    for t in sorted(set(s), reverse=True):
        predicted = s >= t
        recall = (predicted & (y == 1)).sum() / (y == 1).sum()
        precision = (predicted & (y == 1)).sum() / predicted.sum()
        total += (recall - previous_recall) * precision
        previous_recall = recall
    return total


def test_auprc_matches_scikit_learn_and_the_definition():
    rng = np.random.default_rng(9)
    y = (rng.uniform(size=40) < 0.25).astype(int)
    y[0] = 1
    s = np.round(rng.normal(size=40) + y, 1)
    assert operating_points.auprc(y, s) == pytest.approx(average_precision_score(y, s))
    assert operating_points.auprc(y, s) == pytest.approx(_brute_average_precision(y, s))
    assert operating_points.average_precision(y, s) == pytest.approx(average_precision_score(y, s))  # the bootstrap's


def test_validation_threshold_reaches_the_target_on_validation_and_is_applied_to_test():
    frame = scored(10, patients=120)
    result = operating_points.assess(frame, n_boot=60, seed=0)
    validation = frame[frame["split"] == "validation"]
    y, s = _test(frame)
    for point in result["points"]:
        t = point["validation_threshold"]
        val_pred = validation["score"] >= t
        if point["fixed"] == "specificity":
            assert (~val_pred[validation["label"] == 0]).mean() >= point["target"]
            # the lowest such threshold: one step lower would miss the target
            lower = validation["score"][validation["score"] < t]
            if len(lower):
                assert (validation["score"][validation["label"] == 0] < lower.max()).mean() < point["target"]
        else:
            assert val_pred[validation["label"] == 1].mean() >= point["target"]
        assert point["achieved_sensitivity"] == pytest.approx(np.mean(s[y == 1] >= t))
        assert point["achieved_specificity"] == pytest.approx(np.mean(s[y == 0] < t))
        low, high = point["on_test_ci95"]
        assert low <= point["on_test"] <= high
    assert result["auprc"] == pytest.approx(average_precision_score(y, s))
    assert result["prevalence"] == pytest.approx(y.mean())


# ---------------------------------------------------------------- subgroups and cohort table


def test_subgroup_cells_are_complete_and_small_cells_marked():
    frame = scored(11, patients=90)
    test = frame[frame["split"] == "test"].copy()
    ages = pd.Series(np.where(test["patient_id"].str[-1].astype(int) < 2, "40-50", "50-60"), index=test.index)
    records = subgroups.subgroup_table(test, {"view": test["view"], "age": ages}, 0.3, n_boot=40, seed=0)
    by_cell = {(r["attribute"], r["value"]): r for r in records}
    assert set(by_cell) == {("view", "CC"), ("view", "MLO"), ("age", "40-50"), ("age", "50-60")}
    assert by_cell[("view", "CC")]["n"] + by_cell[("view", "MLO")]["n"] == len(test)
    cc = test[test["view"] == "CC"]
    assert by_cell[("view", "CC")]["auc"] == pytest.approx(metrics.roc_auc(cc["label"], cc["score"]))
    assert by_cell[("view", "CC")]["sensitivity"] == pytest.approx((cc["score"][cc["label"] == 1] >= 0.3).mean())
    small = by_cell[("age", "40-50")]
    assert small["small"] and "small cell" in small["note"]  # shown, not hidden
    one_class = subgroups.subgroup_table(test[test["label"] == 0], {"view": test["view"]}, 0.3, n_boot=10, seed=0)
    assert all(np.isnan(r["auc"]) and "one class only" in r["note"] for r in one_class)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A", "A"),
        ("acr c", "C"),
        (3, "C"),
        ("4.0", "D"),
        (4.0, "D"),
        ("", "unknown"),
        (None, "unknown"),
        ("E", "unknown"),
    ],
)
def test_density_values_are_normalised(raw, expected):
    assert subgroups.normalise_density(raw) == expected


def test_cohort_table_counts_by_brute_force():
    frame = scored(12, patients=30)
    split = frame.groupby("patient_id", as_index=False).agg(split=("split", "first"), label=("label", "max"))
    split["age"] = [40 + i if i != 3 else np.nan for i in range(len(split))]
    images = frame[["image_id", "patient_id", "view", "laterality", "label"]].assign(
        density=np.resize(["A", "2", "c", "x"], len(frame))
    )
    rows = {r["split"]: r for r in cohort_summary.cohort_rows("hospital", split, images)}
    for name in ("train", "validation", "test"):
        members = split[split["split"] == name]
        assert rows[name]["patients"] == len(members) and rows[name]["cases"] == members["label"].sum()
        assert rows[name]["age_mean"] == pytest.approx(members["age"].mean())
        assert rows[name]["images"] == 4 * len(members) and rows[name]["cc"] == 2 * len(members)
    assert rows["all"]["age_missing"] == 1 and rows["all"]["positive_images"] == frame["label"].sum()
    assert [rows["all"][f"density_{c}"] for c in ("A", "B", "C", "D", "unknown")] == [30, 30, 30, 0, 30]
    reasons = ["duplicate view: P1_L_CC already taken by x", "duplicate view: P2_R_CC taken by y", "not a DICOM file"]
    rejected = pd.DataFrame({"file": ["a/b.dcm", "c.dcm", "d.dcm"], "reason": reasons})
    assert cohort_summary.rejected_rows("film", rejected) == [
        {"domain": "film", "reason": "duplicate view", "files": 2},
        {"domain": "film", "reason": "not a DICOM file", "files": 1},
    ]


# ---------------------------------------------------------------- domain shift


def _brute_mmd2(x, y, bandwidth2):
    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / bandwidth2)

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd_statistic_by_brute_force_and_permutation_p_value_against_exact_enumeration():
    rng = np.random.default_rng(13)
    x, y = rng.normal(size=(4, 3)), rng.normal(0.8, 1, size=(4, 3))
    zx, zy = domain_shift.standardise(x, y)
    pooled = np.vstack([zx, zy])
    distances = [np.sum((a - b) ** 2) for i, a in enumerate(pooled) for b in pooled[i + 1 :]]
    result = domain_shift.mmd_test(x, y, permutations=4000, seed=1)
    observed = _brute_mmd2(zx, zy, np.median(distances))
    assert result["mmd2"] == pytest.approx(observed)
    exact = np.mean(
        [
            _brute_mmd2(pooled[list(c)], pooled[[i for i in range(8) if i not in c]], np.median(distances))
            >= observed - 1e-12
            for c in itertools.combinations(range(8), 4)
        ]
    )
    assert result["p_value"] == pytest.approx(exact, abs=0.03)


def test_mmd_permutation_test_holds_its_level_and_detects_a_shift():
    null_p = [domain_shift.mmd_test(*_normal_pair(seed, 0.0), permutations=100, seed=seed)["p_value"]
              for seed in range(40)]  # fmt: skip
    assert np.mean(np.array(null_p) < 0.05) <= 0.15 and 0.3 < np.mean(null_p) < 0.7  # about uniform under H0
    shifted = [domain_shift.mmd_test(*_normal_pair(seed, 0.6), permutations=100, seed=seed) for seed in range(5)]
    assert all(r["p_value"] < 0.02 for r in shifted)


def _normal_pair(seed, shift):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(30, 6)), rng.normal(shift, 1, size=(40, 6))


def test_histogram_distance_is_the_shift_of_a_translated_histogram():
    centres = np.linspace(0.0078125, 0.9921875, 64)
    a = np.exp(-((centres - 0.3) ** 2) / 0.005)
    b = np.exp(-((centres - 0.5) ** 2) / 0.005)
    assert domain_shift.histogram_distance(centres, a, b) == pytest.approx(0.2, abs=0.01)
    assert domain_shift.histogram_distance(centres, a, a) == 0


def test_rank_agreement():
    assert domain_shift.rank_agreement([0.1, 0.5, 0.3], [0.0, 0.2, 0.1])["same_order"] is True
    assert domain_shift.rank_agreement([0.1, 0.5, 0.3], [0.0, 0.1, 0.2])["same_order"] is False
