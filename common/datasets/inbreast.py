"""INbreast (Moreira et al., Acad Radiol 19:236-248, 2012, doi:10.1016/j.acra.2011.09.014) -> cohort.

Published metadata: `INbreast.xls` (or the CSV export users make of it, `,` or `;` separated), one row per
image: Patient ID and Patient age (blanked as "removed" in the public release), Laterality (L/R), View
(CC/MLO), Acquisition date, File Name, ACR (density 1-4), Bi-Rads (1, 2, 3, 4a, 4b, 4c, 5, 6), findings.
`File Name` is the prefix of the DICOM file name, `<File Name>_<patient hash>_MG_<L|R>_<CC|MLO>_ANON.dcm`;
the hash is the only patient grouping the release keeps, so it is the cohort's patient_id.

INbreast has no pathology for every image, so the label is a BI-RADS rule (common.datasets.birads; BI-RADS 3
per `--birads3`, default as Shen et al. 2019). There is no official split: the split step splits patients.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from common.artifacts import UnusableInput
from common.datasets.assemble import Assembly
from common.datasets.birads import DEFAULT_BIRADS3, BiradsError, birads_label
from common.datasets.dicom_index import image_rejection, index_dicoms, metadata_rejection
from common.datasets.sheets import read_sheet

NAME = "inbreast"
OFFICIAL_SPLIT = False
USES_BIRADS = True
METADATA_HELP = "INbreast.xls or a CSV export of it"
REQUIRED = ("filename", "laterality", "view", "birads")
_DICOM_NAME = re.compile(r"^(\d+)_([0-9A-Za-z]+)_MG_([LR])_(CC|MLO)_ANON\.dcm$", re.IGNORECASE)


def build(metadata: list[Path], dicom_root: Path, options: dict) -> Assembly:
    if len(metadata) != 1 or metadata[0].is_dir():
        raise UnusableInput("INbreast needs exactly one metadata file (INbreast.xls or its CSV export)")
    birads3 = options.get("birads3", DEFAULT_BIRADS3)
    sheet = read_sheet(metadata[0])
    sheet.require(*REQUIRED)
    frame = sheet.frame
    rejected: list[dict[str, str]] = []
    duplicated = frame["filename"].duplicated(keep=False) & (frame["filename"] != "")
    rows: dict[str, dict] = {}
    tainted: set[str] = set()
    for index in frame.index:
        where = sheet.where(int(frame.at[index, "line"]))
        name = frame.at[index, "filename"]
        side, view = frame.at[index, "laterality"].upper(), frame.at[index, "view"].upper()
        if not name.isdigit():
            rejected.append(metadata_rejection(where, "File Name is not the numeric DICOM file-name prefix"))
            continue
        if duplicated[index]:
            rejected.append(metadata_rejection(where, f"image {name} listed twice"))
            tainted.add(name)
            continue
        if side not in ("L", "R") or view not in ("CC", "MLO"):
            rejected.append(metadata_rejection(where, f"Laterality/View {side[:5]!r} {view[:5]!r} not L|R and CC|MLO"))
            tainted.add(name)
            continue
        try:
            label = birads_label(frame.at[index, "birads"], birads3)
        except BiradsError as error:
            rejected.append(metadata_rejection(where, str(error)))
            tainted.add(name)
            continue
        age = pd.to_numeric(sheet.column("patientage")[index], errors="coerce")
        rows[name] = {"where": where, "laterality": side, "view": view, "label": label, "age": age,
                      "source_label": f"BI-RADS {frame.at[index, 'birads']}"}

    headers, unreadable = index_dicoms(dicom_root, skip={metadata[0]})
    rejected += unreadable
    images, matched = [], set()
    for header in headers.itertuples():
        parts = _DICOM_NAME.match(header.name)
        if not parts:
            rejected.append(image_rejection(header.file, "file name is not INbreast's "
                                                         "<File Name>_<patient>_MG_<L|R>_<CC|MLO>_ANON.dcm"))
            continue
        name, patient = parts.group(1), parts.group(2).lower()
        matched.add(name)
        if name in tainted:
            rejected.append(image_rejection(header.file, "its metadata row was rejected"))
            continue
        row = rows.get(name)
        if row is None:
            rejected.append(image_rejection(header.file, "no metadata row with this File Name"))
            continue
        if (header.laterality, header.view) != (row["laterality"], row["view"]):
            rejected.append(image_rejection(header.file, f"DICOM says {header.laterality} {header.view}, the sheet "
                                                         f"{row['laterality']} {row['view']}"))
            continue
        if row["label"] is None:
            rejected.append(image_rejection(header.file, "BI-RADS 3 left out (--birads3 exclude)"))
            continue
        age = row["age"] if pd.notna(row["age"]) else header.dicom_age
        images.append({"file": header.file, "patient_id": patient, "laterality": row["laterality"],
                       "view": row["view"], "label": row["label"], "split": "", "age": age,
                       "source_label": row["source_label"]})
    for name, row in rows.items():
        if name not in matched:
            rejected.append(metadata_rejection(row["where"], "no DICOM file whose name starts with this File Name"))
    return Assembly(pd.DataFrame(images), rejected, {"birads3_rule": birads3})
