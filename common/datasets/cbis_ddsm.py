"""CBIS-DDSM (TCIA, doi:10.7937/K9/TCIA.2016.7O02S9CY): the four case-description CSVs -> cohort.

Published metadata: `mass_case_description_train_set.csv`, `mass_case_description_test_set.csv`,
`calc_case_description_train_set.csv`, `calc_case_description_test_set.csv`, one row per abnormality
(patient_id, breast density, left or right breast, image view, abnormality id, abnormality type, ...,
pathology, ..., image file path, ...). Quirks handled here:

* the density column is `breast_density` in the mass files and `breast density` in the calc files (column
  names are compared without case, spaces or punctuation, so both read alike; density is not needed);
* several abnormality rows per image: the image is positive when any of them is MALIGNANT;
* pathology is MALIGNANT, BENIGN or BENIGN_WITHOUT_CALLBACK (both benign kinds are negatives); any other
  value rejects the row and, with it, the image (a partly known label is not a label);
* `image file path` names DICOM UID folders that the TCIA download does not create (it writes
  `CBIS-DDSM/<PatientID>/<date-study>/<n-series description-uid>/1-1.dcm`), so images are matched through
  the DICOM PatientID, e.g. `Mass-Test_P_00173_LEFT_CC`: collection, subset, patient, side, view. Files whose
  PatientID carries an abnormality suffix (`..._LEFT_CC_1`) are the ROI masks and lesion crops;
* path cells carry stray whitespace and newlines (trimmed; only their first segment is ever used);
* no ages (PatientAge is absent; patients stay without age) and no normal controls (every image has an
  abnormality; negatives are the benign ones);
* the official train/test split (file name `*_train_set` / `*_test_set`, else the path's collection prefix) is
  kept as the cohort's fixed split: Shen et al. (2019) evaluated on the official test set.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from common.artifacts import UnusableInput
from common.datasets.assemble import Assembly
from common.datasets.dicom_index import image_rejection, index_dicoms, metadata_rejection
from common.datasets.sheets import Sheet, read_sheet

NAME = "cbis-ddsm"
OFFICIAL_SPLIT = True
METADATA_HELP = "the case-description CSVs (mass/calc x train/test) or the folder holding them"
FILE_PATTERN = "*case_description*.csv"
PATHOLOGY = {"MALIGNANT": 1, "BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0}
ABNORMALITY = {"MASS": "Mass", "CALCIFICATION": "Calc"}
SUBSETS = {"TRAINING": "train", "TEST": "test"}
REQUIRED = ("patientid", "leftorrightbreast", "imageview", "abnormalityid", "abnormalitytype", "pathology")
_FULL_MAMMOGRAM = re.compile(r"^(MASS|CALC)-(TRAINING|TEST)_(P_\d{5})_(LEFT|RIGHT)_(CC|MLO)$")
_DERIVED_IMAGE = re.compile(r"^(MASS|CALC)-(TRAINING|TEST)_P_\d{5}_(LEFT|RIGHT)_(CC|MLO)_\d+$")


def metadata_files(paths: list[Path]) -> list[Path]:
    files = [f for p in paths for f in (sorted(p.glob(FILE_PATTERN)) if p.is_dir() else [p])]
    if not files:
        raise UnusableInput(f"no CBIS-DDSM case-description CSV ({FILE_PATTERN}) in {', '.join(map(str, paths))}")
    return files


def build(metadata: list[Path], dicom_root: Path, options: dict) -> Assembly:
    files = metadata_files(metadata)
    rejected: list[dict[str, str]] = []
    rows = pd.concat([_abnormalities(read_sheet(path), rejected) for path in files], ignore_index=True)
    headers, unreadable = index_dicoms(dicom_root, skip=set(files))
    rejected += unreadable

    duplicated = rows.duplicated(["key", "abnormality"], keep=False) & rows["key"].notna()
    for row in rows[duplicated].itertuples():
        rejected.append(metadata_rejection(row.where, f"abnormality {row.abnormality} of this image listed twice"))
    bad_keys = set(rows.loc[duplicated | rows["problem"], "key"].dropna())
    good = rows[~duplicated & ~rows["problem"]]
    labels = good.groupby("key").agg(label=("label", "max"), split=("split", "first"),
                                     source_label=("pathology", lambda p: "+".join(sorted(set(p)))))

    images, matched = [], set()
    for header in headers.itertuples():
        tag = header.patient_tag.upper()
        if _DERIVED_IMAGE.match(tag):
            rejected.append(image_rejection(header.file, "ROI mask or cropped lesion, not a full mammogram"))
            continue
        full = _FULL_MAMMOGRAM.match(tag)
        if not full:
            rejected.append(image_rejection(header.file, "PatientID is not a CBIS-DDSM full-mammogram id "
                                                         "(<Mass|Calc>-<Training|Test>_P_<5 digits>_<side>_<view>)"))
            continue
        key = tag
        if key in bad_keys:
            rejected.append(image_rejection(header.file, "its metadata row(s) were rejected, see the metadata rows"))
            matched.add(key)
            continue
        if key not in labels.index:
            rejected.append(image_rejection(header.file, "no case-description row for this image"))
            continue
        side, view = full.group(4)[0], full.group(5)
        if (header.laterality, header.view) != (side, view):
            rejected.append(image_rejection(header.file, f"DICOM says {header.laterality} {header.view} but the "
                                                         f"PatientID says {side} {view}"))
            continue
        matched.add(key)
        entry = labels.loc[key]
        images.append({"file": header.file, "patient_id": full.group(3), "laterality": side, "view": view,
                       "label": int(entry["label"]), "split": entry["split"], "age": header.dicom_age,
                       "source_label": entry["source_label"]})
    for row in good[~good["key"].isin(matched)].itertuples():
        rejected.append(metadata_rejection(row.where, "no DICOM file with this image's PatientID in the folder"))
    return Assembly(pd.DataFrame(images), rejected)


def _abnormalities(sheet: Sheet, rejected: list[dict[str, str]]) -> pd.DataFrame:
    """One row per abnormality: key (the image's PatientID), abnormality, label, split, problem, where."""
    sheet.require(*REQUIRED)
    frame = sheet.frame
    name = sheet.name.lower()
    subset_from_name = "TRAINING" if "train" in name else ("TEST" if "test" in name else None)
    out = []
    for index in frame.index:
        cell = {key: frame.at[index, key] for key in REQUIRED}
        where = sheet.where(int(frame.at[index, "line"]))
        patient, side = cell["patientid"].upper(), cell["leftorrightbreast"].upper()
        view, kind = cell["imageview"].upper(), cell["abnormalitytype"].upper()
        pathology = cell["pathology"].upper()
        subset = subset_from_name or _subset_from_path(sheet.column("imagefilepath")[index])
        reason = None
        if not re.fullmatch(r"P_\d{5}", patient):
            reason = "patient_id is not P_ followed by 5 digits"
        elif side not in ("LEFT", "RIGHT") or view not in ("CC", "MLO"):
            reason = f"side/view {side[:10]!r} {view[:10]!r} is not LEFT|RIGHT and CC|MLO"
        elif kind not in ABNORMALITY:
            reason = f"abnormality type {kind[:20]!r} is not mass or calcification"
        elif subset is None:
            reason = "cannot tell training from test (file name or image file path)"
        # The image this row describes is known from here on, so a bad pathology also rejects the image.
        key = None if reason else f"{ABNORMALITY[kind].upper()}-{subset}_{patient}_{side}_{view}"
        if reason is None and pathology not in PATHOLOGY:
            reason = f"unknown pathology {pathology[:30]!r} (expected {', '.join(PATHOLOGY)})"
        if reason:
            rejected.append(metadata_rejection(where, reason))
        out.append({"key": key, "abnormality": cell["abnormalityid"], "label": PATHOLOGY.get(pathology, -1),
                    "pathology": pathology, "split": SUBSETS.get(subset or "", ""), "problem": reason is not None,
                    "where": where})
    return pd.DataFrame(out, columns=["key", "abnormality", "label", "pathology", "split", "problem", "where"])


def _subset_from_path(path: str) -> str | None:
    match = re.match(r"^\s*(?:MASS|CALC)-(TRAINING|TEST)_", str(path).upper())
    return match.group(1) if match else None
