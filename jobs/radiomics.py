"""`mammo radiomics`: 34 features per image, 141-attribute patient vectors, PCA + gradient boosting (thesis 4.5).

The step itself is common.radiomics.step; this module parses the arguments and records the step's output.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import shards
from common.artifacts import step_output
from common.profile import DEFAULT_PROFILE, load_profile
from common.radiomics import step

HELP = "Radiomic features (34 per image) + baseline scores + age -> patient vectors -> PCA + gradient boosting."
INPUT_ARGS = ("images", "split", "scores", "merge_shards")
OUTPUT_ARG = "out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, help="preprocess output folder (images.csv, hires/, images/)")
    parser.add_argument("--split", required=True, help="split output folder (split.csv)")
    parser.add_argument("--scores", required=True, help="baseline-infer output folder (scores.csv)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="demo, ci, full or a profile YAML file")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument("--save-masks", action="store_true",
                        help="write masks/<image_id>.png overlays for the report (none for BurnedInAnnotation YES "
                             "images, only the breast for untagged ones)")
    parser.add_argument("--shard", help="I/N: only the features of shard I of N into --out (common.shards)")
    parser.add_argument("--merge-shards", help="folder of finished feature shards: use their features, then fit")


def run(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)  # a bad profile names itself and the key (the CLI exits 2)
    images = step.read_table(args.images, "images.csv", step.REQUIRED_IMAGE_COLUMNS)
    out = Path(args.out)
    if args.shard:
        with step_output("radiomics", out, {"images": args.images, "shard": args.shard}, profile) as record:
            record.counts = step.feature_shard(images, Path(args.images), out, args.shard, workers=args.workers,
                                               save_masks=args.save_masks)
            record.extra["shard"] = shards.record(*shards.parse(args.shard))
        return 0
    inputs = step.StepInputs(Path(args.images), images,
                             step.read_table(args.split, "split.csv", step.REQUIRED_SPLIT_COLUMNS),
                             step.read_table(args.scores, "scores.csv", step.REQUIRED_SCORE_COLUMNS))
    with step_output("radiomics", out, {"images": args.images, "split": args.split, "scores": args.scores},
                     profile) as record:
        record.counts, extra = step.fit_and_score(inputs, out, profile, workers=args.workers,
                                                  save_masks=args.save_masks, merge_shards=args.merge_shards)
        record.extra.update(extra)
    return 0
