"""`mammo shard-plan`: how many shards a sharded step runs as, written as the JSON list Argo fans out over.

The plan pod reads only the small table that measures the work (cohort.csv, images.csv); `withParam` starts one
shard pod per entry ({index, count}).
"""

from __future__ import annotations

import argparse
import json
import sys

from common import shards
from common.artifacts import UnusableInput, atomic_write_text

HELP = "Shard plan of a sharded CPU step (preprocess, radiomics) from the data size and the requested shards."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # dest: `step` is the CLI's own name for the running step (telemetry job, log lines).
    parser.add_argument("--step", dest="sharded_step", required=True, choices=sorted(shards.SHARDED_STEPS))
    parser.add_argument("--rows", required=True, help="the CSV whose rows measure the work (cohort.csv, images.csv)")
    parser.add_argument("--shards", required=True, type=int, help="shards wanted (fewer when the data is small)")
    parser.add_argument("--plan", required=True, help="where to write the plan (JSON list of {index, count})")


def run(args: argparse.Namespace) -> int:
    try:
        items = shards.rows_in(args.rows)
        planned = shards.plan(items, args.shards, shards.SHARDED_STEPS[args.sharded_step].min_per_shard)
    except (OSError, ValueError) as error:
        raise UnusableInput(f"shard plan: {error}") from None
    atomic_write_text(args.plan, json.dumps(planned) + "\n")
    print(f"mammo shard-plan: {args.sharded_step}: {items} rows -> {len(planned)} shard(s)", file=sys.stderr)
    return 0
