"""`mammo baseline-infer`: P(cancer) per image from a baseline model, before any adaptation.

The baseline is a model folder (from `mammo pretrain`) or one of Shen's published Keras 2 HDF5
checkpoints; run on the sources' own test splits it gives the in-domain rows of thesis Tables 2-3, on
the target cohort the out-of-domain row of Table 4. `penultimate.csv` keeps each image's penultimate
features (from the same forward pass) for the report's domain-shift measure.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from common import model_folder
from common.artifacts import UnusableInput, atomic_write_csv, atomic_write_json, require_success, step_output
from common.checkpoint import CheckpointMatch, CheckpointMismatch, load_keras2_weights, published_mean
from common.data import join_images_with_split
from common.determinism import configure_determinism
from common.inference import score_frame_with_features, write_scores_and_metrics
from common.model import Architecture, build_end2end
from common.model_folder import Preprocessing
from common.profile import DEFAULT_PROFILE, Profile, load_profile

if TYPE_CHECKING:
    import keras

HELP = "Score every image of a cohort with a baseline model (--model DIR or --checkpoint FILE.h5)."
INPUT_ARGS = ("model", "checkpoint", "images", "split")
OUTPUT_ARG = "out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="model folder (model.keras, preprocessing.json)")
    source.add_argument("--checkpoint", help="Shen's Keras 2 HDF5 file, e.g. inbreast_vgg16_512x1.h5")
    parser.add_argument(
        "--checkpoint-mean",
        type=float,
        help="featurewise mean (0-255 units) for --checkpoint; default 44.33 for inbreast_*, 52.18 for ddsm_* files",
    )
    parser.add_argument("--images", required=True, help="preprocess output folder")
    parser.add_argument("--split", required=True, help="split output folder")
    parser.add_argument("--out", required=True, help="folder for scores.csv and metrics.json")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="full, demo, ci or a YAML file")
    parser.add_argument(
        "--splits",
        choices=("all", "test"),
        default="all",
        help="all: every split; test: only what metrics.json needs (validation for the threshold, test)",
    )
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help="flip TTA")


def _baseline(args: argparse.Namespace, profile: Profile
              ) -> tuple[keras.Model, Preprocessing, CheckpointMatch | None]:
    if args.model:
        require_success(args.model)
        return (*model_folder.read(args.model), None)
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise UnusableInput(f"checkpoint {checkpoint} does not exist")
    mean = args.checkpoint_mean if args.checkpoint_mean is not None else published_mean(checkpoint)
    if mean is None:
        raise UnusableInput(f"--checkpoint-mean is needed: {checkpoint.name} is not a known published checkpoint")
    arch = Architecture.from_profile(profile)
    model = build_end2end(arch, dropout=0.0, weight_decay=0.0)
    try:
        match = load_keras2_weights(model, checkpoint)
    except CheckpointMismatch as error:
        hint = "" if profile.model.backbone_width == 1.0 else " (published checkpoints need --profile full)"
        raise UnusableInput(f"{error}{hint}") from None
    print(f"checkpoint {checkpoint.name}: {len(match.pairs)} layers paired, {match.rule}", file=sys.stderr)
    return model, Preprocessing(float(mean), arch.height, arch.width, f"checkpoint {checkpoint.name}"), match


def run(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    configure_determinism(profile)
    out = Path(args.out)
    inputs = {k: getattr(args, k) for k in ("model", "checkpoint", "images", "split") if getattr(args, k)}
    with step_output("baseline-infer", out, inputs, profile) as record:
        model, prep, match = _baseline(args, profile)
        if match is not None:  # kept as a model folder: fine-tuning on real data starts from this output
            model_folder.write(out, model, prep)
            # Which checkpoint layer went into which model layer, so a user can audit the import.
            audit = {"checkpoint": Path(args.checkpoint).name, **match.as_json()}
            atomic_write_json(out / "checkpoint_match.json", audit)
            record.extra["checkpoint_rule"] = match.rule
        cohort = join_images_with_split(args.images, args.split).with_size(prep.height, prep.width)
        cohort.warn()
        frame = cohort.frame if args.splits == "all" else cohort.split("validation", "test")
        tta = profile.training.flip_tta if args.tta is None else args.tta
        scores, features = score_frame_with_features(
            model, frame, prep, tta=tta, batch_size=profile.training.batch_size
        )
        atomic_write_csv(out / "penultimate.csv", features)  # the report's domain-shift diagnostics
        metrics = write_scores_and_metrics(scores, out, profile)
        record.counts.update({"scored_images": len(scores), "left_out_images": len(cohort.problems)})
        record.extra.update({"preprocessing": asdict(prep), "tta": tta, "test_auc": metrics["auc"]})
    return 0
