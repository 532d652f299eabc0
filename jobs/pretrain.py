"""`mammo pretrain`: train End2End on a source domain, giving the pipeline a baseline without a checkpoint.

Source A only (`pretrain-a`), or source A then source B (`pretrain-ab`, started from A with
`--init-model`): the thesis' two baselines, CBIS-DDSM and CBIS-DDSM + INbreast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common.artifacts import require_success, step_output
from common.profile import DEFAULT_PROFILE, load_profile
from common.training import save_model_folder, train_phase

HELP = "Train End2End from scratch (or from --init-model) on a source domain's train split."
INPUT_ARGS = ("images", "split", "init_model")
OUTPUT_ARG = "out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, help="preprocess output folder (images/, images.csv)")
    parser.add_argument("--split", required=True, help="split output folder (split.csv)")
    parser.add_argument("--out", required=True, help="model folder to write")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="full, demo, ci or a YAML file")
    parser.add_argument("--init-model", help="model folder to start from (e.g. the source-A model)")
    parser.add_argument("--source-name", help="name of the source domain, recorded in preprocessing.json")


def run(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    init_model = Path(args.init_model) if args.init_model else None
    if init_model is not None:
        require_success(init_model)
    inputs = {"images": args.images, "split": args.split, "init_model": args.init_model}
    with step_output("pretrain", args.out, inputs, profile) as record:
        trained = train_phase(
            step="pretrain",
            phase="pretrain",
            images=Path(args.images),
            split=Path(args.split),
            out_dir=Path(args.out),
            profile=profile,
            init_model=init_model,
            source_name=args.source_name,
        )
        save_model_folder(trained, Path(args.out))
        record.counts.update(trained.record["counts"])
        record.extra["best_epoch"] = trained.record["best_epoch"]
    return 0
