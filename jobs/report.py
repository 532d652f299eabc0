"""`mammo report`: the thesis' tables and figures from a pipeline work directory (common.report)."""

from __future__ import annotations

import argparse
from pathlib import Path

from common import telemetry
from common.artifacts import step_output
from common.profile import DEFAULT_PROFILE, load_profile
from common.report import provenance, publication
from common.report.build import build_report

HELP = "Rebuild thesis Tables 2-5, 8, 9 and the figures from a work directory: report.html, report.md, summary.json."
INPUT_ARGS = ("workdir",)
OUTPUT_ARG = "out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="pipeline work directory (infer-ab-hospital required)")
    parser.add_argument("--out", required=True, help="output folder, e.g. WORKDIR/report")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="demo|ci|full or a YAML file the pipeline ran with")
    parser.add_argument("--show-burned-in", action="store_true",
                        help="let figures show images tagged BurnedInAnnotation YES (text in the pixels may identify "
                             "a patient; without this flag they are never shown)")


def run(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)  # a bad profile names itself and the key (the CLI exits 2)
    with step_output("report", args.out, {"workdir": args.workdir}, profile) as record:
        command = provenance.report_command(args.workdir, args.out, args.profile)
        summary = build_report(args.workdir, args.out, profile_name=args.profile, profile=profile, command=command,
                               show_burned_in=args.show_burned_in)
        record.counts = {
            "models": len(summary["models"]),
            "figures": len(summary["figures"]),
            "missing_parts": len(summary["missing_parts"]),
        }
    for key in summary["models"]:
        telemetry.push_model_metrics(key, publication.pushed_values(summary, key))
    for pair in summary.get("domain_shift", {}).get("pairs", []):
        telemetry.push_domain_shift(pair["model"], pair["domain"], pair)
    print(f"report written to {Path(args.out) / 'report.html'}")
    return 0
