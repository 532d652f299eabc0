"""`mammo model summary`: parameter counts of End2End per training phase, as JSON on stdout."""

from __future__ import annotations

import argparse
import json

from common.model import Architecture, phase_summary
from common.profile import DEFAULT_PROFILE, load_profile

HELP = "Inspect the End2End model: `summary` prints total and per-phase trainable parameter counts as JSON."
INPUT_ARGS: tuple[str, ...] = ()
OUTPUT_ARG = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["summary"])
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="full, demo, ci or a YAML file")


def run(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    summary = {"profile": profile.name, **phase_summary(Architecture.from_profile(profile))}
    print(json.dumps(summary, indent=2))
    return 0
