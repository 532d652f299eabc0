"""CMMD, the Chinese Mammography Database (TCIA, doi:10.7937/tcia.eqde-4b16) -> cohort.

Published metadata: the clinical data sheet (`CMMD_clinicaldata_revision.xlsx`, or a CSV export), one row
per examined breast: ID1 (patient, e.g. D1-0001, also the DICOM PatientID and the TCIA folder), LeftRight
(L/R), Age, number (images), abnormality (calcification, mass, both), classification (Benign/Malignant,
biopsy-confirmed), subtype (molecular subtype, D2 only). Images carry ImageLaterality and a view code, so
each image takes the classification of its breast. Only the examined breast is labelled: images of the other
breast (many D2 patients) have no row and are rejected rather than guessed. No official split.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from common.artifacts import UnusableInput
from common.datasets.assemble import Assembly
from common.datasets.dicom_index import image_rejection, index_dicoms, metadata_rejection
from common.datasets.sheets import read_sheet

NAME = "cmmd"
OFFICIAL_SPLIT = False
METADATA_HELP = "the clinical data sheet (CMMD_clinicaldata_revision.xlsx or a CSV export)"
CLASSIFICATION = {"MALIGNANT": 1, "BENIGN": 0}
REQUIRED = ("id1", "leftright", "classification")


def build(metadata: list[Path], dicom_root: Path, options: dict) -> Assembly:
    if len(metadata) != 1 or metadata[0].is_dir():
        raise UnusableInput("CMMD needs exactly one metadata file (the clinical data sheet)")
    sheet = read_sheet(metadata[0])
    sheet.require(*REQUIRED)
    frame = sheet.frame
    frame["match"] = frame["id1"].str.upper()  # IDs are matched to PatientID without regard to case
    frame["leftright"] = frame["leftright"].str.upper()
    duplicated = frame.duplicated(["match", "leftright"], keep=False)
    rejected: list[dict[str, str]] = []
    breasts: dict[tuple[str, str], dict] = {}
    tainted: set[tuple[str, str]] = set()
    for index in frame.index:
        where = sheet.where(int(frame.at[index, "line"]))
        key = (frame.at[index, "match"], frame.at[index, "leftright"])
        classification = frame.at[index, "classification"].upper()
        if not key[0] or key[1] not in ("L", "R"):
            rejected.append(metadata_rejection(where, "ID1 empty or LeftRight not L/R"))
            continue
        if duplicated[index]:
            rejected.append(metadata_rejection(where, "breast listed twice"))
        elif classification not in CLASSIFICATION:
            rejected.append(metadata_rejection(where, f"classification {classification[:20]!r} is not Benign or "
                                                      "Malignant"))
        else:
            age = pd.to_numeric(sheet.column("age")[index], errors="coerce")
            breasts[key] = {"where": where, "patient_id": frame.at[index, "id1"], "age": age,
                            "label": CLASSIFICATION[classification], "source_label": frame.at[index, "classification"]}
            continue
        tainted.add(key)

    headers, unreadable = index_dicoms(dicom_root, skip={metadata[0]})
    rejected += unreadable
    images, matched = [], set()
    for header in headers.itertuples():
        key = (header.patient_tag.upper(), header.laterality)
        matched.add(key)
        if key in tainted:
            rejected.append(image_rejection(header.file, "its breast's metadata row was rejected"))
            continue
        breast = breasts.get(key)
        if breast is None:
            rejected.append(image_rejection(header.file, "breast not in the clinical sheet (unlabelled)"))
            continue
        age = breast["age"] if pd.notna(breast["age"]) else header.dicom_age
        images.append({"file": header.file, "patient_id": breast["patient_id"], "laterality": key[1],
                       "view": header.view, "label": breast["label"], "split": "", "age": age,
                       "source_label": breast["source_label"]})
    for key, breast in breasts.items():
        if key not in matched:
            rejected.append(metadata_rejection(breast["where"], "no DICOM file of this patient and breast"))
    return Assembly(pd.DataFrame(images), rejected)
