"""`mammo cohort DATASET`: a public dataset's own metadata + its DICOM download -> cohort.csv, image_table.csv."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.artifacts import UnusableInput, step_output
from common.datasets import DATASETS, adapter
from common.datasets.assemble import summary_line, write_cohort
from common.datasets.birads import BIRADS3_RULES, DEFAULT_BIRADS3
from common.profile import DEFAULT_PROFILE

HELP = (
    "Turn a public dataset's metadata, exactly as published, into cohort.csv (one row per patient, with the "
    "official split where the dataset has one), image_table.csv (one labelled row per DICOM file, for "
    "`mammo preprocess --image-table`) and rejected.csv. Datasets: cbis-ddsm (the four case-description "
    "CSVs), inbreast (INbreast.xls or its CSV export), cmmd (the clinical data sheet), vindr-mammo "
    "(breast-level_annotations.csv [+ finding_annotations.csv]). Images are matched through what the DICOM "
    "files say (PatientID, file name), not through paths in the metadata."
)
INPUT_ARGS = ("dicom",)
OUTPUT_ARG = "out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=sorted(DATASETS), help="which public dataset the metadata describes")
    parser.add_argument("--metadata", required=True, nargs="+", action="extend", type=Path,
                        help="the dataset's metadata file(s), or a folder holding them")
    parser.add_argument("--dicom", required=True, help="the downloaded DICOM folder (any layout)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--birads3", choices=BIRADS3_RULES, default=DEFAULT_BIRADS3,
                        help="inbreast, vindr-mammo: label of BI-RADS 3 images (default: negative, as Shen et al. "
                             "2019 for INbreast)")
    parser.add_argument("--profile", default=DEFAULT_PROFILE,
                        help="accepted for uniformity with the other steps (unused)")


def run(args: argparse.Namespace) -> int:
    module = adapter(args.dataset)
    dicom_root = Path(args.dicom)
    if not dicom_root.is_dir():
        raise UnusableInput(f"--dicom {dicom_root} is not a directory")
    options = {"birads3": args.birads3}
    inputs = {"dataset": args.dataset, "metadata": [str(p) for p in args.metadata], "dicom": str(dicom_root),
              **({"birads3": args.birads3} if getattr(module, "USES_BIRADS", False) else {})}
    with step_output("cohort", args.out, inputs) as record:
        assembly = module.build(list(args.metadata), dicom_root, options)
        counts = write_cohort(assembly, args.out)
        record.counts.update({k: v for k, v in counts.items() if isinstance(v, int)})
        record.extra["dataset"] = args.dataset
        record.extra["official_split"] = module.OFFICIAL_SPLIT
        record.extra.update({k: v for k, v in counts.items() if not isinstance(v, int)})
    print(f"mammo {summary_line(args.dataset, counts)}", file=sys.stderr)
    return 0
