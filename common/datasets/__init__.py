"""Adapters from public mammography datasets' own metadata to the project's cohort files.

Each module reads one dataset's metadata exactly as its publisher distributes it, matches rows to the
DICOM files of the download by what the files say (PatientID, file name), labels images, and hands the
rows to `assemble.write_cohort`, the part every dataset shares.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# dataset name -> module; imported on demand (a CLI start-up imports only the chosen one).
DATASETS = {
    "cbis-ddsm": "common.datasets.cbis_ddsm",
    "inbreast": "common.datasets.inbreast",
    "cmmd": "common.datasets.cmmd",
    "vindr-mammo": "common.datasets.vindr",
}
# Datasets that publish an official train/test split (the split step keeps it with --fixed).
OFFICIAL_SPLIT = frozenset({"cbis-ddsm", "vindr-mammo"})


def adapter(name: str) -> ModuleType:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
    return importlib.import_module(DATASETS[name])
