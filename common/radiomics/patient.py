"""Patient vectors of thesis section 4.5: 4 CNN scores + 4 x 34 radiomic features + age = 141 attributes.

Order is fixed so a model trained on one run reads another's vectors: the four baseline scores in
view order LCC, RCC, LMLO, RMLO, then each view's 34 features (view-major, FEATURE_NAMES order),
then age.

Missing views (a patient without one of the four images, or an image rejected by preprocess or by
feature extraction) never stop the step. Rule, applied per view and recorded in the `imputed` column
(e.g. "LCC<-LMLO; RMLO:median"):
1. a missing view takes the score and features of the other view of the same breast (CC <-> MLO),
   which images the same tissue;
2. whatever is still missing takes the median of the training split's observed values (training
   only, so validation and test never leak into the model), as does a missing age;
3. when no training patient has an age (public datasets such as CBIS-DDSM publish none), age carries no
   information the model could learn, so every patient gets the same constant age (`age:none in training`).
Patients without a single view that has both a CNN score and features are excluded with a reason
instead: four imputed views would make a synthetic patient.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from common.radiomics.features import FEATURE_NAMES

VIEW_ORDER = ("LCC", "RCC", "LMLO", "RMLO")
NO_AGE = 0.0  # the constant age of a cohort whose training patients have none
SAME_BREAST = {"LCC": "LMLO", "LMLO": "LCC", "RCC": "RMLO", "RMLO": "RCC"}


def view_columns(view: str) -> list[str]:
    return [f"score_{view}"] + [f"{view}_{name}" for name in FEATURE_NAMES]


def attribute_names() -> list[str]:
    """The 141 model inputs in their fixed order."""
    return [f"score_{v}" for v in VIEW_ORDER] + [f"{v}_{n}" for v in VIEW_ORDER for n in FEATURE_NAMES] + ["age"]


def build_patient_vectors(
    features: pd.DataFrame, images: pd.DataFrame, scores: pd.DataFrame, split: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (vectors, excluded).

    features: image_id + FEATURE_NAMES; images: image_id, patient_id, laterality, view;
    scores: image_id, score; split: patient_id, age, label, split.
    vectors: patient_id, split, label, the 141 attributes, imputed. excluded: patient_id, reason.
    """
    per_image = images[["image_id", "patient_id", "laterality", "view"]].merge(
        features[["image_id", *FEATURE_NAMES]], on="image_id", how="left"
    )
    per_image = per_image.merge(scores[["image_id", "score"]], on="image_id", how="left")
    per_image["view_code"] = per_image["laterality"].astype(str) + per_image["view"].astype(str)
    per_image = per_image[per_image["view_code"].isin(VIEW_ORDER)]

    patients = split[["patient_id", "split", "label", "age"]].drop_duplicates("patient_id").set_index("patient_id")
    wide = pd.DataFrame(index=patients.index)
    for view in VIEW_ORDER:
        rows = per_image[per_image["view_code"] == view].groupby("patient_id")[["score", *FEATURE_NAMES]].mean()
        rows.columns = view_columns(view)
        wide = wide.join(rows, how="left")
    wide["age"] = pd.to_numeric(patients["age"], errors="coerce")

    observed = {view: wide[view_columns(view)].notna().all(axis=1) for view in VIEW_ORDER}
    usable = pd.concat(observed, axis=1).any(axis=1)
    excluded = pd.DataFrame(
        {"patient_id": wide.index[~usable], "reason": "no view with both a CNN score and radiomic features"}
    )
    wide = wide[usable].copy()
    notes: dict[str, list[str]] = {pid: [] for pid in wide.index}

    for view in VIEW_ORDER:
        other = SAME_BREAST[view]
        columns, other_columns = view_columns(view), view_columns(other)
        for pid in wide.index[wide[columns].isna().any(axis=1)]:
            source = wide.loc[pid, other_columns].to_numpy(dtype=float)
            if observed[other][pid]:
                gaps = wide.loc[pid, columns].isna().to_numpy()
                wide.loc[pid, np.array(columns)[gaps]] = source[gaps]
                notes[pid].append(f"{view}<-{other}")

    in_training = patients.loc[wide.index, "split"] == "train"
    originally = pd.concat(
        [wide[view_columns(view)].where(observed[view], axis=0) for view in VIEW_ORDER] + [wide[["age"]]], axis=1
    )
    medians = originally[in_training].median()
    if pd.isna(medians["age"]):
        wide["age"], medians["age"] = NO_AGE, NO_AGE
        for pid in wide.index:
            notes[pid].append("age:none in training")
    for view in [*VIEW_ORDER, "age"]:
        columns = ["age"] if view == "age" else view_columns(view)
        gaps = wide[columns].isna()
        if not gaps.any().any():
            continue
        missing_median = [c for c in columns if gaps[c].any() and pd.isna(medians[c])]
        if missing_median:
            raise ValueError(f"cannot impute {view}: no training patient has {missing_median[0]}")
        for pid in wide.index[gaps.any(axis=1)]:
            notes[pid].append(f"{view}:median")
        wide[columns] = wide[columns].fillna(medians[columns])

    vectors = pd.DataFrame(
        {
            "patient_id": wide.index,
            "split": patients.loc[wide.index, "split"].to_numpy(),
            "label": patients.loc[wide.index, "label"].astype(int).to_numpy(),
        }
    )
    vectors = pd.concat([vectors, wide[attribute_names()].reset_index(drop=True)], axis=1)
    vectors["imputed"] = ["; ".join(notes[pid]) for pid in wide.index]
    return vectors, excluded.reset_index(drop=True)
