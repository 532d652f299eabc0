"""`mammo`: one subcommand per step of the registry (common.steps).

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
from contextlib import nullcontext
from typing import NoReturn

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides the step's own lines

from common import __version__, fingerprint, storage, workfolder
from common.artifacts import UnusableInput
from common.profile import ProfileError
from common.steps import STEPS
from jobs.startup import quiet_native_notices, stop_group_on_sigterm


class Parser(argparse.ArgumentParser):
    """Usage errors in the project's one error style: one line on stderr, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser(load: set[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; with `load`, only those steps' modules are imported (the others list their summary)."""
    parser = Parser(prog="mammo", description="Mammography CNN domain-shift pipeline.")
    parser.add_argument("--version", action="version", version=f"mammo {__version__}")
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    for name, step in STEPS.items():
        if load is not None and name not in load:
            sub.add_parser(name, help=step.summary)
            continue
        with quiet_native_notices():
            module = importlib.import_module(step.module)
        step_parser = sub.add_parser(name, help=step.summary, description=module.HELP)
        module.add_arguments(step_parser)
        storage.add_arguments(step_parser)
        step_parser.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(load={a for a in argv[:1] if a in STEPS}).parse_args(argv)
    stop_group_on_sigterm()
    started = time.time()
    try:
        code = _run_step(args, argv)
    except (UnusableInput, ProfileError) as error:
        print(f"mammo {args.step}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mammo {args.step}: interrupted", file=sys.stderr)
        return 130
    if code == 0:
        print(f"mammo {args.step}: {time.time() - started:.1f}s", file=sys.stderr)
    return code


def _run_step(args: argparse.Namespace, argv: list[str]) -> int:
    """The step body between staging and publishing, in its locked (and fingerprinted) output folder."""
    from common import telemetry

    module = args._module
    output_arg = getattr(module, "OUTPUT_ARG", None)
    # Before staging: an s3:// input counts as its URI, not as the fresh local copy.
    stamp = fingerprint.of_argv(argv) if output_arg and getattr(args, output_arg, None) else None
    # Success is pushed only once the output is published: staging sits inside the telemetry scope.
    with telemetry.step_run(args.step, profile=getattr(args, "profile", None)) as run:
        with storage.staged(args, getattr(module, "INPUT_ARGS", ()), output_arg):
            out_dir: str | None = getattr(args, output_arg, None) if output_arg else None
            with workfolder.step_folder(out_dir, stamp) if stamp and out_dir else nullcontext() as target:
                if target is not None and output_arg:
                    setattr(args, output_arg, str(target))
                code = module.run(args)
            if target is not None and output_arg:
                setattr(args, output_arg, out_dir)  # the folder itself again, now that a replacement is in
            run.record_output(out_dir)
        run.succeeded = code == 0
    return code


if __name__ == "__main__":
    sys.exit(main())
