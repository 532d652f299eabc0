"""Patient vectors (141 attributes, imputation rule) and the grouped PCA + gradient boosting search."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.profile import RadiomicsSettings, load_profile
from common.radiomics import FEATURE_NAMES
from common.radiomics.classifier import (
    cross_validation,
    feasible_grid,
    make_pipeline,
    pair_groups,
    search,
)
from common.radiomics.patient import VIEW_ORDER, attribute_names, build_patient_vectors

VIEWS = {"LCC": ("L", "CC"), "RCC": ("R", "CC"), "LMLO": ("L", "MLO"), "RMLO": ("R", "MLO")}


def cohort(n: int = 6, drop: tuple[tuple[str, str], ...] = ()) -> dict[str, pd.DataFrame]:
    """n patients, 4 views each; feature value = 1000 * patient + 10 * view index + feature index / 100."""
    images, features, scores = [], [], []
    for p in range(n):
        pid = f"P{p}"
        for v, code in enumerate(VIEW_ORDER):
            if (pid, code) in drop:
                continue
            lat, view = VIEWS[code]
            image_id = f"{pid}_{lat}_{view}"
            images.append({"image_id": image_id, "patient_id": pid, "laterality": lat, "view": view})
            values = {f: 1000 * p + 10 * v + k / 100 for k, f in enumerate(FEATURE_NAMES)}
            features.append({"image_id": image_id, **values})
            scores.append({"image_id": image_id, "score": p / 10 + v / 100})
    split = pd.DataFrame(
        {
            "patient_id": [f"P{p}" for p in range(n)],
            "age": [50.0 + p for p in range(n)],
            "label": [p % 2 for p in range(n)],
            "split": ["train", "train", "train", "train", "validation", "test"][:n] + ["test"] * max(0, n - 6),
        }
    )
    return {"features": pd.DataFrame(features), "images": pd.DataFrame(images), "scores": pd.DataFrame(scores),
            "split": split}  # fmt: skip


def test_141_attributes_in_the_fixed_order():
    names = attribute_names()
    assert len(names) == 141
    assert names[:4] == ["score_LCC", "score_RCC", "score_LMLO", "score_RMLO"]
    assert names[4:38] == [f"LCC_{f}" for f in FEATURE_NAMES]
    assert names[38] == "RCC_imin" and names[-2] == "RMLO_pd" and names[-1] == "age"


def test_complete_patients_are_placed_column_by_column():
    vectors, excluded = build_patient_vectors(**cohort())
    assert excluded.empty
    assert list(vectors.columns) == ["patient_id", "split", "label", *attribute_names(), "imputed"]
    row = vectors.set_index("patient_id").loc["P3"]
    for v, code in enumerate(VIEW_ORDER):
        assert row[f"score_{code}"] == pytest.approx(0.3 + v / 100)
        for k, name in enumerate(FEATURE_NAMES):
            assert row[f"{code}_{name}"] == pytest.approx(3000 + 10 * v + k / 100)
    assert row["age"] == 53 and row["label"] == 1 and row["imputed"] == ""


def test_a_missing_view_takes_the_other_view_of_the_same_breast():
    vectors, _ = build_patient_vectors(**cohort(drop=(("P2", "RMLO"),)))
    row = vectors.set_index("patient_id").loc["P2"]
    assert row["imputed"] == "RMLO<-RCC"
    assert row["score_RMLO"] == row["score_RCC"]
    assert all(row[f"RMLO_{f}"] == row[f"RCC_{f}"] for f in FEATURE_NAMES)


def test_a_missing_breast_takes_training_medians_never_validation_or_test_values():
    data = cohort(n=8, drop=(("P5", "LCC"), ("P5", "LMLO")))
    data["split"].loc[data["split"]["patient_id"] == "P1", "age"] = np.nan
    vectors, _ = build_patient_vectors(**data)
    row = vectors.set_index("patient_id").loc["P5"]
    assert row["imputed"] == "LCC:median; LMLO:median"
    # Training patients are P0..P3: medians of 0, 1000, 2000, 3000 (+ view and feature offsets).
    assert row["LCC_imin"] == pytest.approx(1500.0)
    assert row["LMLO_ip05"] == pytest.approx(1500 + 20 + FEATURE_NAMES.index("ip05") / 100)
    assert row["score_LCC"] == pytest.approx(0.15)
    p1 = vectors.set_index("patient_id").loc["P1"]
    assert p1["imputed"] == "age:median" and p1["age"] == pytest.approx(52.0)  # median of 50, 52, 53


def test_a_patient_without_usable_views_is_excluded_with_a_reason():
    data = cohort(drop=tuple(("P4", code) for code in VIEW_ORDER))
    data["scores"] = data["scores"][data["scores"]["image_id"] != "P0_L_CC"]  # a score missing: imputed, kept
    vectors, excluded = build_patient_vectors(**data)
    assert "P4" not in set(vectors["patient_id"])
    assert excluded.to_dict("records") == [
        {"patient_id": "P4", "reason": "no view with both a CNN score and radiomic features"}
    ]
    p0 = vectors.set_index("patient_id").loc["P0"]
    assert p0["imputed"] == "LCC<-LMLO" and p0["score_LCC"] == p0["score_LMLO"]
    assert p0["LCC_imin"] == 0.0  # its own features stay


def test_imputation_fails_clearly_when_no_training_patient_has_a_column():
    data = cohort(drop=tuple((f"P{p}", code) for p in range(6) for code in ("RCC", "RMLO")))
    with pytest.raises(ValueError, match="no training patient"):
        build_patient_vectors(**data)


# ---------------------------------------------------------------- grouped search


def test_pair_groups_keep_matched_pairs_together():
    split = pd.DataFrame({"patient_id": ["a", "b", "c", "d"], "pair_id": ["x", "x", np.nan, " "]})
    groups = pair_groups(pd.Series(["a", "b", "c", "d"]), split)
    assert list(groups) == ["pair:x", "pair:x", "patient:c", "patient:d"]


def informative_patients(n_pairs: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.tile([1, 0], n_pairs)
    groups = np.repeat([f"pair:{i}" for i in range(n_pairs)], 2)
    x = rng.normal(size=(2 * n_pairs, 141))
    x[:, :4] += 3.0 * y[:, None]  # the CNN scores carry the signal
    return x, y, groups


def test_folds_never_split_a_pair_and_hold_both_classes():
    x, y, groups = informative_patients()
    cv = cross_validation(y, groups, 5)
    for train, test in cv.split(x, y, groups):
        assert not set(groups[train]) & set(groups[test])
        assert set(y[test]) == {0, 1}
    assert cross_validation(y[:6], groups[:6], 5).get_n_splits() == 3  # 3 pairs: at most 3 folds


def test_pipeline_is_scaler_pca_gradient_boosting_with_seed_42():
    pipeline = make_pipeline()
    assert [name for name, _ in pipeline.steps] == ["scaler", "pca", "gb"]
    assert pipeline.named_steps["gb"].random_state == 42


def test_grid_search_picks_from_the_grid_and_learns_the_signal():
    x, y, groups = informative_patients()
    grid = {"pca__n_components": [5, 10, 500], "gb__learning_rate": [0.05, 0.2], "gb__max_depth": [2],
            "gb__min_samples_leaf": [5], "gb__n_estimators": [20], "gb__subsample": [0.8]}  # fmt: skip
    found = search(x, y, groups, RadiomicsSettings(0.4, 3, grid, "grid"), n_jobs=1)
    assert found.dropped == {"pca__n_components": [500]}
    assert len(found.cv_results) == 4
    assert found.best_params["pca__n_components"] in (5, 10) and found.best_params["gb__learning_rate"] in (0.05, 0.2)
    assert found.best_cv_auc > 0.75
    assert found.cv_results["mean_test_score"].max() == pytest.approx(found.best_cv_auc)
    held_out_x, held_out_y, _ = informative_patients(seed=1)
    probabilities = found.model.predict_proba(held_out_x)[:, 1]
    assert probabilities[held_out_y == 1].mean() > probabilities[held_out_y == 0].mean() + 0.2


def test_halving_search_grows_the_number_of_training_patients():
    x, y, groups = informative_patients(n_pairs=60)
    grid = {"pca__n_components": [5, 10], "gb__learning_rate": [0.05, 0.2], "gb__max_depth": [2],
            "gb__min_samples_leaf": [5], "gb__n_estimators": [10, 30], "gb__subsample": [0.8]}  # fmt: skip
    found = search(x, y, groups, RadiomicsSettings(0.4, 3, grid, "halving", halving_factor=3), n_jobs=1)
    rounds = found.cv_results.groupby("iter")["n_resources"].agg(["first", "size"])
    assert list(rounds["size"]) == [8, 3]  # 8 combinations, the best third go on
    assert rounds["first"].iloc[1] == 3 * rounds["first"].iloc[0]
    assert found.best_params["gb__n_estimators"] in (10, 30)  # trees are searched, not the budget
    assert found.model.named_steps["gb"].n_estimators == found.best_params["gb__n_estimators"]


def test_settings_come_from_the_profiles():
    for name in ("ci", "demo", "full"):
        settings = load_profile(name).radiomics
        assert settings.search in {"grid", "halving"} and settings.cv_folds >= 2
        assert set(settings.grid) == {"pca__n_components", "gb__learning_rate", "gb__max_depth",
                                      "gb__min_samples_leaf", "gb__n_estimators", "gb__subsample"}  # fmt: skip
    full = load_profile("full").radiomics.grid  # thesis Table 1 ranges
    assert (min(full["pca__n_components"]), max(full["pca__n_components"])) == (10, 30)
    assert (min(full["gb__n_estimators"]), max(full["gb__n_estimators"])) == (200, 10000)
    with pytest.raises(ValueError, match="grid or halving"):
        load_profile("ci").replaced({"radiomics.search": "random"})


def test_feasible_grid_keeps_one_value_when_all_are_too_large():
    grid, dropped = feasible_grid({"pca__n_components": [40, 50]}, 12)
    assert grid == {"pca__n_components": [12]} and dropped == {"pca__n_components": [40, 50]}


def test_a_cohort_without_training_ages_gets_a_constant_age_not_an_error():
    """Public datasets without ages (CBIS-DDSM): age carries no information, every vector gets the same value."""
    data = cohort(n=8, drop=(("P2", "RCC"), ("P2", "RMLO")))  # P2 has only two views, the left breast
    data["split"]["age"] = np.nan
    data["split"].loc[data["split"]["patient_id"] == "P7", "age"] = 61.0  # a test patient with an age
    vectors, excluded = build_patient_vectors(**data)
    assert excluded.empty and len(vectors) == 8
    assert vectors["age"].nunique() == 1 and np.isfinite(vectors["age"]).all()
    row = vectors.set_index("patient_id").loc["P2"]
    assert "RCC:median" in row["imputed"] and "age:none in training" in row["imputed"]
