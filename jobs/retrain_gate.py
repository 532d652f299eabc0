"""`mammo retrain-gate`: the retraining DAG's last step: gate, register, promote, move the state forward."""

from __future__ import annotations

import argparse
from pathlib import Path

from common import telemetry
from common.artifacts import require_success
from common.constants import RETRAIN
from common.profile import DEFAULT_PROFILE
from common.retraining import GateInputs, gate, record_decision
from common.storage import Storage

HELP = "Champion/challenger gate on the locked test set; register the challenger, promote it if not worse."
INPUT_ARGS = ("discovery", "images", "split", "challenger", "champion_scores", "challenger_scores")
OUTPUT_ARG = "out"


def add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    """The champion-challenger test's settings, shared with `mammo retrain` (which runs this gate)."""
    parser.add_argument("--margin", type=float, default=RETRAIN.margin,
                        help="non-inferiority margin on the AUC difference")
    parser.add_argument("--alpha", type=float, default=RETRAIN.alpha,
                        help="one-sided level of the non-inferiority test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name, text in (("discovery", "retrain-discover output"), ("images", "training data (retrain-data)"),
                       ("split", "split of the training data"), ("challenger", "finetune-stage2 model folder"),
                       ("champion-scores", "baseline-infer of the champion"),
                       ("challenger-scores", "baseline-infer of the challenger")):
        parser.add_argument(f"--{name}", required=True, help=f"{text} folder")
    add_gate_arguments(parser)
    parser.add_argument("--finetune-config", type=int, choices=(1, 2), default=RETRAIN.finetune_config,
                        help="recorded in the lineage")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="recorded in the lineage")
    parser.add_argument("--out", required=True, help="folder for this run's decision record")


def run(args: argparse.Namespace) -> int:
    folders = {name: Path(getattr(args, name)) for name in INPUT_ARGS}
    for folder in folders.values():
        require_success(folder)
    inputs = GateInputs(**folders, margin=args.margin, alpha=args.alpha, config=args.finetune_config,
                        profile=args.profile)
    try:
        decision = gate(inputs, Storage(getattr(args, "s3_endpoint", None)))
    except BaseException:
        telemetry.push_retrain_decision("failed", 0)
        raise
    record_decision(decision, Path(args.out))
    print(f"mammo retrain-gate: {decision.decision}: {decision.reason}")
    return 0
