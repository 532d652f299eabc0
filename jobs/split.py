"""`mammo split`: patient-level train/validation/test assignment (scheme in common.split)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from common.artifacts import atomic_write_csv, step_output
from common.cohort import read_cohort_csv
from common.constants import SPLITS
from common.profile import DEFAULT_PROFILE, load_profile
from common.split import (
    UNKNOWN_STRATUM,
    assign_fixed_split,
    assign_split,
    read_previous,
    split_counts,
)

HELP = "Split a cohort by patient (pairs kept together) into train/validation/test, stable as the cohort grows."
INPUT_ARGS = ("cohort", "previous")
OUTPUT_ARG = "out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cohort", required=True, help="cohort.csv (patient_id, age, label, pair_id optional)")
    parser.add_argument("--out", required=True, help="output folder for split.csv")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="demo|ci|full or a YAML file (section `split`)")
    parser.add_argument("--seed", type=int, default=None, help="overrides the profile's split seed")
    parser.add_argument("--fixed", action="store_true",
                        help="keep the cohort's official split column (CBIS-DDSM, VinDr-Mammo): official test stays "
                             "test, official training patients are split into train and validation")
    parser.add_argument(
        "--previous",
        default=None,
        help="an earlier split.csv: its patients keep their subset, only newcomers are placed (locked test set)",
    )


def run(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)  # a bad profile names itself and the key (the CLI exits 2)
    settings = profile.split if args.seed is None else dataclasses.replace(profile.split, seed=args.seed)
    cohort_path = Path(args.cohort)
    cohort = read_cohort_csv(cohort_path)  # refuses a cohort that breaks the contract, naming every problem
    previous = read_previous(args.previous) if args.previous else None

    inputs = {"cohort": cohort_path, **({"previous": args.previous} if args.previous else {})}
    with step_output("split", args.out, inputs, profile) as record:
        split = (assign_fixed_split if args.fixed else assign_split)(cohort, settings, previous)
        atomic_write_csv(Path(args.out) / "split.csv", split)
        kept = 0 if previous is None else int(split["patient_id"].isin(previous["patient_id"]).sum())
        record.counts = {
            "patients": len(split),
            "kept_from_previous": kept,
            "newly_placed": len(split) - kept,
            "age_unknown_patients": int((split["age_stratum"] == UNKNOWN_STRATUM).sum()),
            **{f"{subset}_{key}": value for subset, c in split_counts(split).items() for key, value in c.items()},
        }
        record.extra["settings"] = {
            "fractions": dict(zip(SPLITS, settings.fractions, strict=True)),
            "age_bins": list(settings.age_bins),
            "seed": settings.seed,
            "fixed": bool(args.fixed),
        }
    unknown = record.counts["age_unknown_patients"]
    if unknown:
        print(f"mammo split: {unknown} patient(s) without age (or outside the age bins) form their own "
              f"'{UNKNOWN_STRATUM}' age stratum", file=sys.stderr)
    return 0
