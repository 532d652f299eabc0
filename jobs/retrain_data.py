"""`mammo retrain-data`: the current training data plus the preprocessed new studies (common.retraining)."""

from __future__ import annotations

import argparse
from pathlib import Path

from common.artifacts import require_success
from common.retraining import training_data

HELP = "Merge the previous training data with the newly preprocessed studies; cohort of the patients with images."
INPUT_ARGS = ("discovery", "new")
OUTPUT_ARG = "out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--discovery", required=True, help="retrain-discover output folder")
    parser.add_argument("--new", required=True, help="preprocess output folder of the new studies")
    parser.add_argument("--out", required=True, help="output folder (a preprocess folder plus cohort.csv)")


def run(args: argparse.Namespace) -> int:
    require_success(args.discovery)
    rows = training_data(Path(args.discovery), Path(args.new), Path(args.out))
    print(f"mammo retrain-data: {rows} images in the training data")
    return 0
