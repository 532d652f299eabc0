"""`mammo finetune-stage2`: full fine-tuning at a tiny learning rate (thesis Table 6 stage 2), then scoring.

Besides the model folder it writes scores.csv for every split and the image-level metrics.json, so the
report's fine-tuned rows need no extra inference step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common.artifacts import require_success, step_output
from common.inference import score_frame, write_scores_and_metrics
from common.profile import DEFAULT_PROFILE, load_profile
from common.training import save_model_folder, train_phase

HELP = "Fine-tuning stage 2: unfreeze everything, train, then score all splits and write metrics.json."
INPUT_ARGS = ("model", "images", "split")
OUTPUT_ARG = "out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="stage-1 model folder")
    parser.add_argument("--images", required=True, help="target preprocess output folder")
    parser.add_argument("--split", required=True, help="target split output folder")
    parser.add_argument("--out", required=True, help="model folder to write")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="full, demo, ci or a YAML file")
    parser.add_argument(
        "--tta", action=argparse.BooleanOptionalAction, default=None, help="flip TTA (default: profile)"
    )


def run(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    require_success(args.model)
    out = Path(args.out)
    inputs = {"model": args.model, "images": args.images, "split": args.split}
    with step_output("finetune-stage2", out, inputs, profile) as record:
        trained = train_phase(
            step="finetune-stage2",
            phase="stage2",
            images=Path(args.images),
            split=Path(args.split),
            out_dir=out,
            profile=profile,
            init_model=Path(args.model),
        )
        saved = save_model_folder(trained, out)
        tta = profile.training.flip_tta if args.tta is None else args.tta
        scores = score_frame(
            saved,
            trained.cohort.frame,
            trained.preprocessing,
            batch_size=profile.training.batch_size,
            tta=tta,
        )
        metrics = write_scores_and_metrics(scores, out, profile)
        record.counts.update({**trained.record["counts"], "scored_images": len(scores)})
        record.extra.update({"best_epoch": trained.record["best_epoch"], "tta": tta, "test_auc": metrics["auc"]})
    return 0
