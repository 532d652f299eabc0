"""`mammo`: one subcommand per pipeline step.

Each step lives in `jobs/<module>.py` and exposes `HELP`, `add_arguments(parser)` and `run(args) -> int`.
Step modules may declare `INPUT_ARGS` (argument names holding input directories) and `OUTPUT_ARG`
(the output directory); the CLI stages `s3://` inputs to local folders before the step and publishes
the output folder after it succeeded, so steps only ever see local paths.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from types import ModuleType

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides the step's own lines

from common import storage
from common.artifacts import UnusableInput

STEPS: dict[str, str] = {
    "synth": "jobs.synth",
    "preprocess": "jobs.preprocess",
    "split": "jobs.split",
    "pretrain": "jobs.pretrain",
    "baseline-infer": "jobs.baseline_infer",
    "finetune-stage1": "jobs.finetune_stage1",
    "finetune-stage2": "jobs.finetune_stage2",
    "radiomics": "jobs.radiomics",
    "report": "jobs.report",
    "retrain": "jobs.retrain",
    "model": "jobs.model",
    "pipeline": "jobs.pipeline",
}


def _load(module_name: str) -> ModuleType | None:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mammo", description="Mammography CNN domain-shift pipeline.")
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    for step, module_name in STEPS.items():
        module = _load(module_name)
        if module is None:
            sub.add_parser(step, help="not implemented yet")
            continue
        step_parser = sub.add_parser(step, help=module.HELP, description=module.HELP)
        module.add_arguments(step_parser)
        storage.add_arguments(step_parser)
        step_parser.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = getattr(args, "_module", None)
    if module is None:
        print(f"mammo {args.step}: not implemented yet", file=sys.stderr)
        return 2
    started = time.time()
    try:
        from common import telemetry

        output_arg = getattr(module, "OUTPUT_ARG", None)
        with storage.staged(args, getattr(module, "INPUT_ARGS", ()), output_arg):
            out_dir = getattr(args, output_arg, None) if output_arg else None
            with telemetry.step_run(args.step, profile=getattr(args, "profile", None), out_dir=out_dir) as run:
                code = module.run(args)
                run.succeeded = code == 0
        return code
    except UnusableInput as error:
        print(f"mammo {args.step}: {error}", file=sys.stderr)
        return 2
    finally:
        print(f"mammo {args.step}: {time.time() - started:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
