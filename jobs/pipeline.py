"""`mammo pipeline run`: the whole DAG on this machine, no cluster needed (the embedded default).

Without hospital data it runs the synthetic demo: three synthetic domains, source pretraining, every
baseline row, both fine-tuning configurations, radiomics and the report.
"""

from __future__ import annotations

from pathlib import Path

from common import pipeline, runner
from common.profile import PROFILE_NAMES

HELP = "Run the whole DAG locally in one work folder; completed tasks (with _SUCCESS.json) are skipped."

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


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["run", "plan"], help="run the DAG, or only print its tasks")
    parser.add_argument("--profile", default="demo", choices=PROFILE_NAMES)
    parser.add_argument("--workdir", type=Path, required=True, help="one folder holding every task's output")
    parser.add_argument("--configs", nargs="+", type=int, default=[1, 2], help="fine-tuning configurations")
    for option, (_, text) in DATA_OPTIONS.items():
        parser.add_argument(option, help=text)


def run(args) -> int:
    params = {name: getattr(args, option[2:].replace("-", "_")) for option, (name, _) in DATA_OPTIONS.items()}
    params = {name: value for name, value in params.items() if value is not None}
    mode = "real" if "hospital_dicom" in params or "hospital_cohort" in params else "synthetic"
    plan = pipeline.tasks(mode, args.profile, {**params, "finetune_configs": args.configs})
    if args.action == "plan":
        for task in plan:
            print(f"{task.name:<20} after {', '.join(task.depends) or '-'}")
        return 0
    print(f"pipeline: {mode} mode, profile {args.profile}, {len(plan)} tasks in {args.workdir}")
    try:
        runner.run_tasks(plan, args.workdir)
    except runner.TaskFailed as error:
        print(f"pipeline: {error}")
        return 1
    print(f"report: {(args.workdir / 'report' / 'report.html').resolve()}")
    return 0
