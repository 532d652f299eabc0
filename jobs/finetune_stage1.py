"""`mammo finetune-stage1`: transfer learning on the target's train split (thesis 4.4, Table 6 stage 1).

Configuration 1 trains Block 2 and the head, configuration 2 also Block 1; the backbone stays frozen.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common.artifacts import require_success, step_output
from common.profile import DEFAULT_PROFILE, load_profile
from common.training import save_model_folder, train_phase

HELP = "Fine-tuning stage 1: train the top blocks (config 1: Block 2 + head; config 2: Block 1 + Block 2 + head)."
INPUT_ARGS = ("model", "images", "split")
OUTPUT_ARG = "out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="baseline model folder (model.keras, preprocessing.json)")
    parser.add_argument("--images", required=True, help="target preprocess output folder")
    parser.add_argument("--split", required=True, help="target split output folder")
    parser.add_argument("--config", required=True, type=int, choices=(1, 2), help="thesis configuration")
    parser.add_argument("--out", required=True, help="model folder to write")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="full, demo, ci or a YAML file")


def run(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    require_success(args.model)
    inputs = {"model": args.model, "images": args.images, "split": args.split, "config": args.config}
    with step_output("finetune-stage1", args.out, inputs, profile) as record:
        trained = train_phase(
            step="finetune-stage1",
            phase=f"stage1_config{args.config}",
            images=Path(args.images),
            split=Path(args.split),
            out_dir=Path(args.out),
            profile=profile,
            init_model=Path(args.model),
        )
        save_model_folder(trained, Path(args.out))
        record.counts.update(trained.record["counts"])
        record.extra["best_epoch"] = trained.record["best_epoch"]
    return 0
