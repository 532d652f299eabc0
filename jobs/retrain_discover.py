"""`mammo retrain-discover`: the retraining DAG's first step (common.retraining.discover).

Writes discovery.json and proceed.txt (`true`/`false`, the Argo output parameter every later task waits for); with
enough new studies also dicom/, cohort.csv, previous/ (the current training data) and champion/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import telemetry
from common.artifacts import UnusableInput, atomic_write_json, atomic_write_text, step_output
from common.constants import RETRAIN
from common.retraining import DISCOVERY, RetrainSettings, discover
from common.storage import S3Uri, Storage, is_s3

HELP = "Find new hospital studies; download them, the champion and the current training data, or stop early."
INPUT_ARGS: tuple[str, ...] = ()
OUTPUT_ARG = "out"
LOCATIONS = ("hospital", "cohort", "registry", "state")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name in LOCATIONS:
        parser.add_argument(f"--{name}", required=True, help=f"s3:// location of the {name} (see mammo retrain)")
    parser.add_argument("--run-id", required=True, help="this run's id (the workflow name on Argo)")
    parser.add_argument("--min-new-studies", type=int, default=RETRAIN.min_new_studies,
                        help="fewer new studies end the run early")
    parser.add_argument("--seed-champion", default="", help="model folder (or s3://) registered when there is none")
    parser.add_argument("--out", required=True, help="output folder")


def settings_from(args: argparse.Namespace) -> RetrainSettings:
    for name in LOCATIONS:
        if not is_s3(getattr(args, name)):
            raise UnusableInput(f"--{name} must be an s3:// URI, got {getattr(args, name)}")
    return RetrainSettings(hospital=S3Uri.parse(args.hospital), cohort=S3Uri.parse(args.cohort),
                           registry=S3Uri.parse(args.registry), state=S3Uri.parse(args.state), work=Path(args.out),
                           profile="", min_new_studies=args.min_new_studies)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    out = Path(args.out)
    with step_output("retrain-discover", out, {"run_id": args.run_id}) as record:
        found = discover(settings, Storage(getattr(args, "s3_endpoint", None)), args.run_id,
                         args.seed_champion or None, out)
        atomic_write_json(out / DISCOVERY, found)
        atomic_write_text(out / "proceed.txt", "true" if found["proceed"] else "false")
        record.counts["new_studies"] = len(found["new_studies"])
        record.extra["proceed"] = found["proceed"]
    if not found["proceed"]:
        telemetry.push_retrain_decision(found["decision"]["decision"], len(found["new_studies"]))
        print(f"mammo retrain-discover: {found['decision']['decision']}: {found['decision']['reason']}")
    return 0
