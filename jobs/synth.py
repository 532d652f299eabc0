"""`mammo synth`: a synthetic four-view DICOM cohort of one acquisition domain (demo and tests)."""

from __future__ import annotations

import argparse
import sys

from common.artifacts import step_output
from common.profile import DEFAULT_PROFILE, load_profile
from common.synth import DOMAINS, synthesize_cohort

HELP = "Write a synthetic four-view mammography cohort (DICOM, cohort.csv, lesions.csv) of one domain."
INPUT_ARGS: tuple[str, ...] = ()
OUTPUT_ARG = "out"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--domain", required=True, choices=sorted(DOMAINS), help="acquisition domain")
    parser.add_argument("--patients", type=int, help="even number of patients (default: the profile's synth.patients)")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed (same seed, same files)")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="demo, ci, full or a YAML file (image size)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")


def run(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    patients = args.patients if args.patients is not None else profile.value(f"synth.patients.{args.domain}")
    if patients < 2 or patients % 2:
        print(f"mammo synth: --patients must be an even number >= 2 (case-control pairs), got {patients}",
              file=sys.stderr)
        return 2
    # Source domains only feed the network (the radiomics step reads the target's images), so a profile
    # may give them a smaller size of their own.
    size = profile.synth.size_of(args.domain)
    shape = (size.height, size.width)
    inputs = {"domain": args.domain, "patients": patients, "seed": args.seed}
    with step_output("synth", args.out, inputs, profile) as record:
        record.counts = synthesize_cohort(
            args.out, patients, args.domain, args.seed, shape, workers=args.workers, progress=True
        )
        record.extra["image_size"] = {"height": shape[0], "width": shape[1]}
        record.extra["pixel_spacing_mm"] = DOMAINS[args.domain].spacing_mm(shape[0])
    return 0
