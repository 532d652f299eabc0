"""The shared end of every adapter: labelled image rows -> cohort.csv, image_table.csv, rejected.csv.

An adapter turns its dataset's metadata and DICOM headers into one row per image (file, patient_id,
laterality, view, label, split, age, source_label) plus rejected rows. This module applies the rules that
are the same for every dataset:

* one image per patient, laterality and view: a second file of the same view (CBIS-DDSM lists some images
  in both its mass and its calcification collection, under two PatientIDs) is rejected and its label merged
  into the kept file's, because it is the same mammogram and a lesion in either list makes it positive;
* a patient is a case (label 1) when any of her images is positive, and `cancer_laterality` is the side
  (L, R, or B for both) of her positive images, which keeps cohort.csv valid for the patient-level steps;
* age: the sheet's, else the DICOM PatientAge, else empty (the split puts such patients in their own
  `unknown` age stratum);
* official split: a patient whose images come from both an official training and test list is put in
  test, so no patient straddles the subsets and the official test images all stay in test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from common.artifacts import UnusableInput, atomic_write_csv
from common.datasets.dicom_index import image_rejection

IMAGE_TABLE_COLUMNS = ["file", "patient_id", "laterality", "view", "label", "split", "age", "source_label"]
TABLE_COLUMNS = ["file", "patient_id", "laterality", "view", "label", "split", "source_label"]
COHORT_COLUMNS = ["patient_id", "age", "label", "pair_id", "cancer_laterality", "split"]
REJECTED_COLUMNS = ["kind", "item", "reason"]


@dataclass
class Assembly:
    """What an adapter found: labelled image rows and the rows (metadata or files) it could not use."""

    images: pd.DataFrame
    rejected: list[dict[str, str]] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)


def write_cohort(assembly: Assembly, out_dir: str | Path) -> dict[str, int]:
    """Write the three tables into out_dir and return the summary counts; UnusableInput if no image is left."""
    out = Path(out_dir)
    images = assembly.images.reindex(columns=IMAGE_TABLE_COLUMNS).sort_values("file", ignore_index=True)
    rejected = list(assembly.rejected)
    images, merged = _one_file_per_view(images, rejected)
    rejected_frame = pd.DataFrame(rejected, columns=REJECTED_COLUMNS)
    atomic_write_csv(out / "rejected.csv", rejected_frame)
    if images.empty:
        raise UnusableInput(f"no image matched a usable metadata row: {len(rejected)} rejected, see rejected.csv")
    cohort, moved = _patients(images)
    images["split"] = images["patient_id"].map(cohort.set_index("patient_id")["split"])
    atomic_write_csv(out / "image_table.csv", images[TABLE_COLUMNS])
    atomic_write_csv(out / "cohort.csv", _formatted(cohort))
    kinds = rejected_frame["kind"].value_counts()
    counts = {
        "patients": len(cohort),
        "images": len(images),
        "positive_images": int(images["label"].sum()),
        "case_patients": int(cohort["label"].sum()),
        "patients_without_age": int(cohort["age"].isna().sum()),
        "patients_with_four_views": int((images.groupby("patient_id").size() == 4).sum()),
        "rejected_metadata_rows": int(kinds.get("metadata", 0)),
        "rejected_images": int(kinds.get("image", 0)),
        "merged_duplicate_views": merged,
        "patients_moved_to_test": moved,
        **{f"official_{name}_patients": int((cohort["split"] == name).sum()) for name in ("train", "test")},
        **assembly.notes,
    }
    return counts


def summary_line(dataset: str, counts: dict[str, int]) -> str:
    split = ""
    if counts["official_train_patients"] or counts["official_test_patients"]:
        split = f", official split {counts['official_train_patients']} train / {counts['official_test_patients']} test"
    return (f"cohort {dataset}: {counts['patients']} patients ({counts['case_patients']} case(s)), "
            f"{counts['images']} images ({counts['positive_images']} positive), "
            f"{counts['patients_without_age']} without age{split}; rejected "
            f"{counts['rejected_metadata_rows']} metadata row(s) and {counts['rejected_images']} file(s), "
            "see rejected.csv")


def _one_file_per_view(images: pd.DataFrame, rejected: list[dict[str, str]]) -> tuple[pd.DataFrame, int]:
    keys = ["patient_id", "laterality", "view"]
    first = ~images.duplicated(keys, keep="first")
    kept = images[first].copy()
    by_view = kept.set_index(keys)
    merged_labels = images.groupby(keys)["label"].max()
    kept["label"] = [int(merged_labels[key]) for key in kept[keys].itertuples(index=False, name=None)]
    for row in images[~first].itertuples(index=False):
        owner = by_view.loc[(row.patient_id, row.laterality, row.view), "file"]
        rejected.append(image_rejection(row.file, f"same patient and view as {owner} (kept; labels merged)"))
    return kept.reset_index(drop=True), int((~first).sum())


def _patients(images: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    rows, moved = [], 0
    for patient_id, group in images.groupby("patient_id", sort=True):
        positive_sides = set(group.loc[group["label"] == 1, "laterality"])
        splits = set(group["split"].fillna("")) - {""}
        if len(splits) > 1:
            moved += 1
        ages = group["age"].dropna()
        rows.append({
            "patient_id": patient_id,
            "age": float(ages.iloc[0]) if len(ages) else np.nan,
            "label": int(bool(positive_sides)),
            "pair_id": "",
            "cancer_laterality": "B" if len(positive_sides) == 2 else "".join(positive_sides),
            "split": "test" if "test" in splits else (splits.pop() if splits else ""),
        })
    return pd.DataFrame(rows, columns=COHORT_COLUMNS), moved


def _formatted(cohort: pd.DataFrame) -> pd.DataFrame:
    """Ages as `55` or `55.5`, empty when unknown, so cohort.csv reads back exactly."""
    frame = cohort.copy()
    frame["age"] = [("" if pd.isna(a) else (str(int(a)) if float(a).is_integer() else f"{a:g}")) for a in cohort["age"]]
    if not (frame["split"] != "").any():
        frame = frame.drop(columns="split")
    return frame
