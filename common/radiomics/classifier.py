"""Patient-level model of thesis section 4.5: StandardScaler -> PCA -> GradientBoostingClassifier.

Hyperparameters come from the profile's `radiomics` section (thesis Table 1 ranges):
* `search: grid` - GridSearchCV over every combination of `grid` (demo, ci).
* `search: halving` - HalvingGridSearchCV (successive halving, `halving_factor`, default 3) over the
  same kind of grid with training patients as the budget: every combination is first cross-validated
  on a small random subset of the training patients, the best 1/factor go on with factor times more,
  up to all of them. The number of trees is searched like any other parameter, not used as the
  budget: a halving on trees would hand the final round's tree count to every winner, so
  n_estimators would never be selected (the thesis selected the smallest, 200). The full profile
  grid takes three values of each Table 1 parameter (both ends and the thesis' selection): 729
  combinations, about 2-3 core-hours of gradient boosting for ~270 training patients, dominated by
  the 10000-tree fits; run it with --workers on a many-core machine.
Folds are StratifiedGroupKFold on the training split only, grouped by pair_id so a case and its matched
control (and all views of a patient, who is one row) never sit on both sides of a fold; scored by ROC
AUC. The refitted best pipeline scores every patient; the threshold is chosen later on validation.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.experimental import enable_halving_search_cv  # noqa: F401  (registers HalvingGridSearchCV)
from sklearn.model_selection import GridSearchCV, HalvingGridSearchCV, StratifiedGroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from common.artifacts import json_default, plain
from common.profile import RadiomicsSettings

RANDOM_STATE = 42
PARALLEL_MIN_FITS = 24


@dataclass
class SearchResult:
    model: Pipeline
    best_params: dict[str, Any]
    best_cv_auc: float
    cv_results: pd.DataFrame
    dropped: dict[str, list[Any]]  # grid values impossible for this data (e.g. more PCA components than rows)


def make_pipeline() -> Pipeline:
    return Pipeline(
        [
            ("scaler", StandardScaler()),
            ("pca", PCA(random_state=RANDOM_STATE)),
            ("gb", GradientBoostingClassifier(random_state=RANDOM_STATE)),
        ]
    )


def pair_groups(patient_ids: pd.Series, split: pd.DataFrame) -> np.ndarray:
    """Cross-validation group of each patient: its pair_id, or the patient itself when unpaired."""
    pairs = split.drop_duplicates("patient_id").set_index("patient_id")
    if "pair_id" in pairs:
        pair = patient_ids.map(pairs["pair_id"]).astype("string").fillna("").str.strip()
    else:
        pair = pd.Series("", index=patient_ids.index, dtype="string")
    return np.where(pair == "", "patient:" + patient_ids.astype(str), "pair:" + pair).astype(str)


def cross_validation(y: np.ndarray, groups: np.ndarray, n_splits: int) -> StratifiedGroupKFold:
    """Stratified folds that never split a group; fewer folds when the smallest class or group count is lower."""
    folds = min(n_splits, int(np.bincount(np.asarray(y, dtype=int), minlength=2).min()), len(np.unique(groups)))
    if folds < 2:
        raise ValueError("training split too small for cross-validation: needs two cases and two controls")
    return StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=RANDOM_STATE)


def feasible_grid(grid: dict[str, list[Any]], max_components: int) -> tuple[dict[str, list[Any]], dict[str, list]]:
    """Drop PCA sizes larger than the smallest training fold allows; keep the largest feasible one at least."""
    grid = {k: list(v) for k, v in grid.items()}
    dropped: dict[str, list] = {}
    sizes = grid.get("pca__n_components")
    if sizes:
        keep = [n for n in sizes if n <= max_components]
        dropped["pca__n_components"] = [n for n in sizes if n > max_components]
        grid["pca__n_components"] = keep or [max_components]
    return grid, {k: v for k, v in dropped.items() if v}


def first_round_size(grid: dict[str, list[Any]], cv: StratifiedGroupKFold, n_samples: int) -> int:
    """Patients in the first halving round: enough that every training fold can fit the largest PCA.

    With sklearn's default (a handful of rows) the large n_components fail to fit in round one and are
    eliminated for that reason alone. A quarter of slack covers folds made uneven by the groups.
    """
    folds = cv.get_n_splits()
    components = max(grid.get("pca__n_components", [1]))
    needed = int(np.ceil((components + 1) * folds / (folds - 1) * 1.25))
    return min(n_samples, max(needed, 4 * folds))


def search(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, settings: RadiomicsSettings, n_jobs: int = 1
) -> SearchResult:
    """Tune on (x, y) - the training split - and refit the best pipeline on all of it."""
    y = np.asarray(y).astype(int)
    cv = cross_validation(y, groups, settings.cv_folds)
    smallest_fold = min(len(train) for train, _ in cv.split(x, y, groups))
    grid, dropped = feasible_grid(settings.grid, min(smallest_fold, x.shape[1]))
    if settings.search == "halving":
        searcher = HalvingGridSearchCV(
            make_pipeline(), grid, resource="n_samples", min_resources=first_round_size(grid, cv, len(y)),
            factor=settings.halving_factor, cv=cv, scoring="roc_auc", refit=True, n_jobs=n_jobs,
            random_state=RANDOM_STATE,
        )  # fmt: skip
    else:
        fits = cv.get_n_splits() * int(np.prod([len(v) for v in grid.values()]))
        # Starting worker processes costs seconds; below a few dozen small fits one process is faster.
        workers = n_jobs if fits >= PARALLEL_MIN_FITS else 1
        searcher = GridSearchCV(make_pipeline(), grid, cv=cv, scoring="roc_auc", refit=True, n_jobs=workers)
    with warnings.catch_warnings():
        # Gradient boosting on a handful of rows warns about nothing actionable; results stay in cv_results.
        warnings.simplefilter("ignore", category=UserWarning)
        searcher.fit(x, y, groups=groups)
    results = pd.DataFrame(searcher.cv_results_)
    results["params"] = [json.dumps(p, sort_keys=True, default=json_default) for p in results["params"]]
    best = {k: plain(v) for k, v in searcher.best_params_.items()}
    return SearchResult(searcher.best_estimator_, best, float(searcher.best_score_), results, dropped)

