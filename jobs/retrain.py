"""`mammo retrain`: one scheduled retraining run on new hospital studies (the CronWorkflow's container).

Logic in common.retraining; this module only parses arguments and records the decision. The run's tasks go
through the local runner in `--work/<run id>`: the same `--run-id` again resumes a run that stopped or failed,
skipping every task whose folder holds its current fingerprint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import runner, telemetry
from common.artifacts import UnusableInput
from common.constants import RETRAIN
from common.profile import DEFAULT_PROFILE
from common.retraining import RetrainRun, RetrainSettings, record_decision
from common.storage import S3Uri, Storage, is_s3
from jobs.retrain_gate import add_gate_arguments

HELP = "Retrain on new hospital studies from S3 and promote the challenger only if it is not worse."
INPUT_ARGS: tuple[str, ...] = ()
OUTPUT_ARG = "out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hospital", required=True, help="s3:// prefix holding one folder per study (DICOMs)")
    parser.add_argument("--cohort", required=True, help="s3:// URI of the hospital's cohort.csv")
    parser.add_argument("--registry", required=True, help="s3:// prefix of the model registry")
    parser.add_argument("--state", required=True, help="s3:// prefix for the retraining state and training data")
    parser.add_argument("--work", required=True, help="local folder holding one work folder per run")
    parser.add_argument("--run-id", help="resume this earlier run (its folder under --work) instead of a new one")
    parser.add_argument("--out", required=True, help="folder (or s3:// prefix) for this run's decision record")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="full, demo, ci or a YAML file")
    parser.add_argument("--min-new-studies", type=int, default=RETRAIN.min_new_studies,
                        help="fewer new studies end the run early")
    add_gate_arguments(parser)
    parser.add_argument("--config", type=int, choices=(1, 2), default=RETRAIN.finetune_config,
                        help="stage-1 fine-tuning configuration")
    parser.add_argument("--seed-champion", help="model folder (or s3://) registered as champion when there is none")


def run(args: argparse.Namespace) -> int:
    for name in ("hospital", "cohort", "registry", "state"):
        if not is_s3(getattr(args, name)):
            raise UnusableInput(f"--{name} must be an s3:// URI, got {getattr(args, name)}")
    settings = RetrainSettings(
        hospital=S3Uri.parse(args.hospital), cohort=S3Uri.parse(args.cohort), registry=S3Uri.parse(args.registry),
        state=S3Uri.parse(args.state), work=Path(args.work), profile=args.profile,
        min_new_studies=args.min_new_studies, margin=args.margin, alpha=args.alpha, config=args.config)
    retrain = RetrainRun(settings, Storage(getattr(args, "s3_endpoint", None)), run_id=args.run_id)
    try:
        decision = retrain.execute(args.seed_champion)
    except (runner.TaskFailed, runner.Stopped) as error:
        telemetry.push_retrain_decision("failed", 0)
        print(f"mammo retrain: {error} (--run-id {retrain.run_id})", file=sys.stderr)
        return getattr(error, "exit_code", 1)
    except BaseException:
        telemetry.push_retrain_decision("failed", 0)
        raise
    record_decision(decision, Path(args.out))
    print(f"mammo retrain: {decision.decision}: {decision.reason}")
    return 0
