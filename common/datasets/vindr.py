"""VinDr-Mammo (PhysioNet, doi:10.13026/br2v-7517; Nguyen et al., Sci Data 10:277, 2023) -> cohort.

Published metadata: `breast-level_annotations.csv`, one row per image: study_id, series_id, image_id,
laterality (L/R), view_position (CC/MLO), height, width, breast_birads (`BI-RADS 1`..`BI-RADS 5`),
breast_density (`DENSITY A`..`D`), split (`training`/`test`, the official split, kept as the fixed split);
and `finding_annotations.csv`, one row per finding (the same ids, finding_categories, finding_birads, box).
Images are `images/<study_id>/<image_id>.dicom`, so a file is matched by its name. One study per woman:
study_id is the patient_id. There is no pathology, so the label is the BI-RADS rule of
common.datasets.birads (`--birads3`); findings only annotate the image table. Ages come from PatientAge.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from common.artifacts import UnusableInput
from common.datasets.assemble import Assembly
from common.datasets.birads import DEFAULT_BIRADS3, BiradsError, birads_label
from common.datasets.dicom_index import image_rejection, index_dicoms, metadata_rejection
from common.datasets.sheets import read_sheet

NAME = "vindr-mammo"
OFFICIAL_SPLIT = True
USES_BIRADS = True
METADATA_HELP = "breast-level_annotations.csv [+ finding_annotations.csv], or the folder holding them"
BREAST_LEVEL, FINDINGS = "breast-level_annotations.csv", "finding_annotations.csv"
REQUIRED = ("studyid", "imageid", "laterality", "viewposition", "breastbirads", "split")
SPLITS = {"TRAINING": "train", "TRAIN": "train", "TEST": "test"}


def build(metadata: list[Path], dicom_root: Path, options: dict) -> Assembly:
    birads3 = options.get("birads3", DEFAULT_BIRADS3)
    files = [f for p in metadata for f in _expand(p)]
    breast_files = [f for f in files if f.name != FINDINGS]
    if len(breast_files) != 1:
        raise UnusableInput(f"VinDr-Mammo needs one {BREAST_LEVEL} (given: {', '.join(map(str, metadata))})")
    sheet = read_sheet(breast_files[0])
    sheet.require(*REQUIRED)
    frame = sheet.frame
    rejected: list[dict[str, str]] = []
    duplicated = frame["imageid"].duplicated(keep=False)
    rows: dict[str, dict] = {}
    tainted: set[str] = set()
    for index in frame.index:
        where = sheet.where(int(frame.at[index, "line"]))
        image_id, study = frame.at[index, "imageid"], frame.at[index, "studyid"]
        side, view = frame.at[index, "laterality"].upper(), frame.at[index, "viewposition"].upper()
        split = SPLITS.get(frame.at[index, "split"].upper())
        reason = None
        if not image_id or not study:
            reason = "study_id or image_id empty"
        elif duplicated[index]:
            reason = "image listed twice"
        elif side not in ("L", "R") or view not in ("CC", "MLO"):
            reason = f"laterality/view_position {side[:5]!r} {view[:5]!r} not L|R and CC|MLO"
        elif split is None:
            reason = f"split {frame.at[index, 'split'][:12]!r} is not training or test"
        if reason is None:
            try:
                label = birads_label(frame.at[index, "breastbirads"], birads3)
            except BiradsError as error:
                reason = str(error)
        if reason:
            rejected.append(metadata_rejection(where, reason))
            tainted.add(image_id)
            continue
        rows[image_id] = {"where": where, "patient_id": study, "laterality": side, "view": view, "label": label,
                          "split": split, "source_label": frame.at[index, "breastbirads"]}
    findings = _findings([f for f in files if f.name == FINDINGS], set(rows) | tainted, rejected)

    headers, unreadable = index_dicoms(dicom_root, skip=set(files))
    rejected += unreadable
    images, matched = [], set()
    for header in headers.itertuples():
        image_id = Path(header.name).stem
        matched.add(image_id)
        row = rows.get(image_id)
        if image_id in tainted:
            rejected.append(image_rejection(header.file, "its metadata row was rejected"))
        elif row is None:
            rejected.append(image_rejection(header.file, "no breast-level row with this image_id"))
        elif (header.laterality, header.view) != (row["laterality"], row["view"]):
            rejected.append(image_rejection(header.file, f"DICOM says {header.laterality} {header.view}, the sheet "
                                                         f"{row['laterality']} {row['view']}"))
        elif row["label"] is None:
            rejected.append(image_rejection(header.file, "BI-RADS 3 left out (--birads3 exclude)"))
        else:
            found = findings.get(image_id, "")
            images.append({"file": header.file, "patient_id": row["patient_id"], "laterality": row["laterality"],
                           "view": row["view"], "label": row["label"], "split": row["split"],
                           "age": header.dicom_age,
                           "source_label": row["source_label"] + (f"; {found}" if found else "")})
    for image_id, row in rows.items():
        if image_id not in matched:
            rejected.append(metadata_rejection(row["where"], "no DICOM file named after this image_id"))
    return Assembly(pd.DataFrame(images), rejected, {"birads3_rule": birads3})


def _expand(path: Path) -> list[Path]:
    """A folder stands for the published file names inside it."""
    return [f for f in (path / BREAST_LEVEL, path / FINDINGS) if f.exists()] if path.is_dir() else [path]


def _findings(files: list[Path], known: set[str], rejected: list[dict[str, str]]) -> dict[str, str]:
    """image_id -> `findings: Mass, Suspicious Calcification` (No Finding left out)."""
    found: dict[str, set[str]] = {}
    for path in files:
        sheet = read_sheet(path)
        sheet.require("imageid", "findingcategories")
        for row in sheet.frame.itertuples():
            if row.imageid not in known:
                rejected.append(metadata_rejection(sheet.where(row.line), "finding for an image_id not in "
                                                                          f"{BREAST_LEVEL}"))
                continue
            categories = {c.strip(" '\"") for c in row.findingcategories.strip("[]").split(",")} - {"", "No Finding"}
            found.setdefault(row.imageid, set()).update(categories)
    return {image_id: "findings: " + ", ".join(sorted(c)) for image_id, c in found.items() if c}
