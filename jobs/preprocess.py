"""`mammo preprocess`: DICOM folder + cohort.csv -> oriented 16-bit PNGs, images.csv, rejected.csv."""

from __future__ import annotations

import argparse
import sys

from common import shards
from common.artifacts import UnusableInput, step_output
from common.preprocess import merge_shards, preprocess_folder
from common.profile import DEFAULT_PROFILE, load_profile
from jobs.arg_types import positive_int

HELP = "Decode DICOMs, put the chest wall on the left, resize to the profile size; index and reject list."
INPUT_ARGS = ("input", "cohort", "image_table", "merge_shards")
OUTPUT_ARG = "out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", help="folder (or s3:// prefix) with DICOM files, any layout")
    parser.add_argument("--cohort", required=True, help="cohort.csv (patient_id, age, label, pair_id, "
                        "cancer_laterality)")
    parser.add_argument("--image-table", default=None, help="image_table.csv from `mammo cohort`: read only its "
                        "files, with its patients and per-image labels")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="demo, ci, full or a profile YAML file")
    parser.add_argument("--workers", type=positive_int, default=None, help="worker processes (default: all cores)")
    parser.add_argument("--shard", help="I/N: convert only shard I of N into --out (common.shards); merge them after")
    parser.add_argument("--merge-shards", help="folder of finished shards: write the step's output from them "
                        "(instead of --input)")


def run(args: argparse.Namespace) -> int:
    if (args.input is None) == (args.merge_shards is None) or (args.shard and args.merge_shards):
        raise UnusableInput("give --input (optionally with --shard I/N) or --merge-shards, not both")
    profile = load_profile(args.profile)
    source = {"input": args.input} if args.input else {"merge_shards": args.merge_shards}
    inputs = {**source, "cohort": args.cohort,
              **({"image_table": args.image_table} if args.image_table else {})}
    shard = shards.parse(args.shard) if args.shard else None
    with step_output("preprocess", args.out, inputs, profile) as record:
        if args.merge_shards:
            folders = shards.shard_folders(args.merge_shards)
            counts = merge_shards(folders, args.cohort, args.out)
            record.extra["merged_shards"] = len(folders)
        else:
            counts = preprocess_folder(args.input, args.cohort, args.out, profile, args.workers, args.image_table,
                                       shard)
        if shard is not None:
            record.extra["shard"] = shards.record(*shard)
        record.counts.update(counts)
    if shard is not None:
        print(f"mammo preprocess: shard {args.shard}: {counts['images']} images from {counts['files']} files, "
              f"{counts['rejected']} rejected", file=sys.stderr)
        return 0
    print(f"mammo preprocess: {counts['images']} images of {counts['patients']} patients "
          f"({counts['patients_four_views']} with four views), {counts['rejected']} file(s) rejected",
          file=sys.stderr)
    return 0
