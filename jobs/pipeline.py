"""`mammo pipeline run`: the whole DAG on this machine, no cluster needed (the embedded default).

Without hospital data it runs the synthetic demo: three synthetic domains, source pretraining, every
baseline row, both fine-tuning configurations, radiomics and the report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from common import pipeline, runner
from common.artifacts import UnusableInput, error_line
from common.datasets import DATASETS
from common.profile import DEFAULT_PROFILE, PROFILE_NAMES, load_profile
from jobs.arg_types import positive_int

DEFAULT_JOBS = 2  # tasks at once in the local runner (--jobs)
HELP = ("Run the whole DAG locally in one work folder; a finished task is skipped unless its fingerprint "
        "(arguments, profile values, inputs, version) changed, which reruns it and everything downstream.")

# CLI option -> pipeline parameter; a user's real data and baseline.
DATA_OPTIONS = {
    "--dicom": ("hospital_dicom", "hospital DICOM folder (any structure) or s3:// prefix"),
    "--cohort": ("hospital_cohort", "hospital cohort.csv (patient_id, age, label, pair_id, cancer_laterality)"),
    "--checkpoint": ("checkpoint", "published End2End Keras 2 HDF5 checkpoint used as the baseline"),
    "--checkpoint-mean": ("checkpoint_mean", "featurewise mean of that checkpoint (44.33 INbreast, 52.18 DDSM)"),
    "--model": ("model", "a model folder from this pipeline used as the baseline"),
    "--film-dicom": ("film_dicom", "source domain A DICOM folder (e.g. CBIS-DDSM) for in-domain rows"),
    "--film-cohort": ("film_cohort", "source domain A cohort.csv"),
    "--ffdm-dicom": ("ffdm_dicom", "source domain B DICOM folder (e.g. INbreast) for in-domain rows"),
    "--ffdm-cohort": ("ffdm_cohort", "source domain B cohort.csv"),
}
# An option that means nothing without its companion.
COMPANIONS = {"--dicom": "--cohort", "--cohort": "--dicom", "--film-dicom": "--film-cohort",
              "--film-cohort": "--film-dicom", "--ffdm-dicom": "--ffdm-cohort", "--ffdm-cohort": "--ffdm-dicom",
              "--checkpoint-mean": "--checkpoint"}


# CLI option -> domain given straight from a public dataset (`mammo cohort`).
DATASET_OPTIONS = {"--film": "film", "--ffdm": "ffdm", "--target": "hospital"}
SPEC_HELP = (f"DATASET:METADATA[,METADATA...]:DICOM_DIR with DATASET one of {', '.join(DATASETS)}, e.g. "
             "cbis-ddsm:cases/:CBIS-DDSM (a metadata folder stands for the published files in it)")


def dataset_spec(text: str) -> tuple[str, list[str], str]:
    """`cbis-ddsm:a.csv,b.csv:/data/CBIS` -> (dataset, metadata paths, DICOM folder); s3:// keeps its colon."""
    parts = text.replace("://", "\0").split(":")
    if len(parts) != 3 or not all(parts) or parts[0] not in DATASETS:
        raise argparse.ArgumentTypeError(f"expected {SPEC_HELP}, got {text!r}")
    dataset, metadata, dicom = (part.replace("\0", "://") for part in parts)
    return dataset, metadata.split(","), dicom


def profile_name(text: str) -> str:
    """A shipped profile name or a YAML file; refused at once (exit 2) when it cannot be loaded."""
    try:
        load_profile(text)
    except (ValueError, OSError, yaml.YAMLError) as error:
        raise argparse.ArgumentTypeError(f"{text}: {error_line(error)}") from None
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["run", "plan"], help="run the DAG, or say what a run would do")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, type=profile_name,
                        help=f"{'|'.join(PROFILE_NAMES)} or a profile YAML file")
    parser.add_argument("--workdir", type=Path, required=True, help="one folder holding every task's output")
    parser.add_argument("--configs", nargs="+", type=int, default=[1, 2], help="fine-tuning configurations")
    parser.add_argument("--seed", type=int, default=0,
                        help="synthetic mode: seed of the generated cohorts (data only, not the model recipe)")
    parser.add_argument("--force", action="store_true", help="rerun every task, even those up to date")
    parser.add_argument("--from", dest="start", metavar="TASK", help="rerun TASK and everything downstream of it")
    parser.add_argument("--jobs", type=positive_int, default=DEFAULT_JOBS,
                        help="local executor: tasks run at once, each when its inputs are ready (default "
                             "%(default)s: a task's heavy part already uses every core; a second task overlaps "
                             "its start-up and serial parts; tasks off the longest path run niced)")
    for option, (_, text) in DATA_OPTIONS.items():
        parser.add_argument(option, help=text)
    for option, domain in DATASET_OPTIONS.items():
        parser.add_argument(option, type=dataset_spec, metavar="SPEC",
                            help=f"the {domain} domain from a public dataset: {SPEC_HELP}")
    parser.add_argument("--executor", choices=["local", "podman"], default="local",
                        help="local: each task a mammo process; podman: the rendered Argo Workflow, each task a "
                             "container of its step image, folders passed only through S3 (needs --artifacts)")
    parser.add_argument("--artifacts", help="podman executor: s3://bucket serving as Argo's artifact repository")


def run(args: argparse.Namespace) -> int:
    params = {name: getattr(args, option[2:].replace("-", "_")) for option, (name, _) in DATA_OPTIONS.items()}
    given = {option for option in DATA_OPTIONS if getattr(args, option[2:].replace("-", "_")) is not None}
    for option in sorted(given):
        if option in COMPANIONS and COMPANIONS[option] not in given:
            raise UnusableInput(f"{option} needs {COMPANIONS[option]} as well")
    params = {name: value for name, value in params.items() if value is not None}
    for option, domain in DATASET_OPTIONS.items():
        spec = getattr(args, option[2:])
        if spec is not None:
            dataset, metadata, dicom = spec
            params.update({f"{domain}_dataset": dataset, f"{domain}_dicom": dicom,
                           **{f"{domain}_metadata_{i}": path for i, path in enumerate(metadata)}})
    mode = "real" if {"hospital_dicom", "hospital_cohort", "hospital_dataset"} & set(params) else "synthetic"
    if mode == "real" and args.seed:
        raise UnusableInput("--seed draws synthetic cohorts, it has no meaning with --dicom")
    try:
        plan = pipeline.tasks(mode, args.profile, {**params, "finetune_configs": args.configs, "seed": args.seed})
    except ValueError as error:
        raise UnusableInput(str(error)) from None
    if args.action == "plan":  # what `run` would do in this work folder, and why
        reasons = runner.decide(plan, args.workdir, force=args.force, start=args.start)
        for task, reason in zip(plan, reasons, strict=True):
            print(f"{task.name:<20} {'runs: ' + reason if reason else 'up to date':<40} after "
                  f"{', '.join(task.depends) or '-'}")
        return 0
    if args.executor == "podman":
        return _run_in_containers(args, params)
    print(f"pipeline: {mode} mode, profile {args.profile}, {len(plan)} tasks in {args.workdir}")
    try:
        runner.run_tasks(plan, args.workdir, force=args.force, start=args.start, jobs=args.jobs)
    except runner.TaskFailed as error:
        print(f"pipeline: {error}")
        return 1
    except runner.Stopped as error:
        print(f"pipeline: {error}", file=sys.stderr)
        return error.exit_code
    print(f"report: {(args.workdir / 'report' / 'report.html').resolve()}")
    return 0


def _run_in_containers(args: argparse.Namespace, params: dict[str, str]) -> int:
    from common import containers
    from common.engine import EngineUnavailable

    if not args.artifacts:
        raise UnusableInput("--executor podman needs --artifacts s3://bucket")
    try:
        containers.run_pipeline(args.profile, tuple(args.configs), params, args.artifacts, args.workdir)
    except (containers.UnsupportedWorkflow, EngineUnavailable) as error:
        raise UnusableInput(str(error)) from error
    except containers.WorkflowFailed as error:
        print(f"pipeline: {error}")
        return 1
    print(f"report: {(args.workdir / 'report' / 'report.html').resolve()}")
    return 0
