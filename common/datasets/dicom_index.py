"""The DICOM folder as a table of headers, so metadata rows can be matched to files by what the files say.

Public datasets are downloaded in layouts their metadata does not describe (the CBIS-DDSM `image file path`
column names folders the TCIA download never creates), so files are found by walking the folder and
reading each header once, without pixels. A file that is not a usable mammogram header becomes a rejected
row with the reader's one-line reason.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from pathlib import Path

import pandas as pd

from common.dicom import DicomError, read_dicom
from common.input_files import find_input_files

COLUMNS = ["file", "name", "patient_tag", "laterality", "view", "dicom_age"]


def index_dicoms(root: str | Path, skip: AbstractSet[Path] = frozenset()) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """(headers, rejected): one row per readable mammogram below root; `file` is relative to root."""
    root = Path(root)
    files, skipped = find_input_files(root, skip={p.resolve() for p in skip})
    rows, rejected = [], [image_rejection(s["file"], s["reason"]) for s in skipped]
    for path in files:
        relative = path.relative_to(root).as_posix()
        try:
            header = read_dicom(path, name_hint=relative, with_pixels=False)
        except DicomError as error:
            rejected.append(image_rejection(relative, str(error)))
            continue
        rows.append({
            "file": relative,
            "name": path.name,
            "patient_tag": header.patient_id,
            "laterality": header.laterality,
            "view": header.view,
            "dicom_age": header.age_years,
        })
    return pd.DataFrame(rows, columns=COLUMNS), rejected


def image_rejection(file: str, reason: str) -> dict[str, str]:
    return {"kind": "image", "item": file, "reason": reason}


def metadata_rejection(where: str, reason: str) -> dict[str, str]:
    return {"kind": "metadata", "item": where, "reason": reason}
