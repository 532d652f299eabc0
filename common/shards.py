"""Shard plans of the CPU steps that scale with the number of images (preprocess, radiomics).

A sharded task runs in three parts, on Argo as pods and locally as processes, from the same plan:
  plan    how many shards: the requested number (workflow parameter `shards`, locally the core count), fewer when
          the data is small, so that no shard is shorter than its start-up (`min_per_shard` rows of the table the
          step's size is read from: cohort patients for preprocess, images.csv rows for radiomics);
  shards  shard i of N takes every N-th item of the step's own sorted work list (`members`) and writes
          `<task>.shards/<i>/` with `_SUCCESS.json` naming {index, count};
  merge   `mammo <step> --merge-shards <task>.shards ...` checks that every shard of the plan finished, combines
          them and writes the task's one output folder, `_SUCCESS.json` last; downstream tasks see no difference.
A rerun keeps the shards that finished (their `_SUCCESS.json` names the same plan and the task's current
fingerprint, common.fingerprint.of_task) and redoes only the others; the merge records that task fingerprint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from common import fingerprint
from common.artifacts import SUCCESS, UnusableInput

T = TypeVar("T")
SHARDS_SUFFIX = ".shards"


@dataclass(frozen=True)
class ShardedStep:
    """How a step is sharded: where its size is read, the smallest useful shard, what the merge does not read."""

    size_arg: str  # the option naming the table whose rows measure the work
    size_file: str  # that table inside the option's folder ("" when the option names the file itself)
    min_per_shard: int
    merge_drops: tuple[str, ...] = ()  # options only the shards read (the merge must not download them)


SHARDED_STEPS: dict[str, ShardedStep] = {
    # ~4 images per patient at ~0.13 core-s each: 50 patients are ~25 core-s, a few times a pod's start-up.
    "preprocess": ShardedStep("--cohort", "", min_per_shard=50, merge_drops=("--input",)),
    # ~1.3 core-s per image (segmentation + 34 features): 40 images are ~50 core-s.
    "radiomics": ShardedStep("--images", "images.csv", min_per_shard=40),
}


def plan(items: int, requested: int, min_per_shard: int) -> list[dict[str, int]]:
    """[{index, count}] for each shard: `requested` shards, fewer if a shard would get under `min_per_shard`."""
    if requested < 1:
        raise ValueError(f"need at least one shard, got {requested}")
    count = max(1, min(requested, items // max(1, min_per_shard)))
    return [{"index": index, "count": count} for index in range(count)]


def parse(spec: str) -> tuple[int, int]:
    """`I/N` (shard I of N, 0-based) from the command line."""
    try:
        index, count = (int(part) for part in spec.split("/"))
    except ValueError:
        raise UnusableInput(f"--shard must look like I/N (e.g. 0/4), got {spec!r}") from None
    if not 0 <= index < count:
        raise UnusableInput(f"--shard {spec}: need 0 <= I < N")
    return index, count


def members(items: Sequence[T], index: int, count: int) -> list[T]:
    """Every count-th item from `index`: shards of similar size and mix whatever the order of the list."""
    return list(items[index::count])


def rows_in(table: str | Path) -> int:
    return len(pd.read_csv(table, usecols=[0]))


def shard_folders(folder: str | Path) -> list[Path]:
    """The finished shards under `folder`, in index order; refuses an incomplete or mixed set."""
    folder = Path(folder)
    found: dict[int, tuple[Path, int]] = {}
    tasks = set()
    for child in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        marker = child / SUCCESS
        if marker.is_file():
            record = json.loads(marker.read_text())
            shard = record.get("shard", {})
            found[int(shard["index"])] = (child, int(shard["count"]))
            tasks.add(fingerprint.of_task(record.get("fingerprint") or {})["digest"])
    counts = {count for _, count in found.values()}
    if len(counts) != 1:
        raise UnusableInput(f"{folder}: no finished shards" if not counts else
                            f"{folder}: shards of different plans ({sorted(counts)} shards)")
    if len(tasks) != 1:
        raise UnusableInput(f"{folder}: shards of different runs (inputs, arguments or profile changed between "
                            "them); rerun the stale ones, then merge")
    [count] = counts
    missing = sorted(set(range(count)) - set(found))
    if missing:
        raise UnusableInput(f"{folder}: shard(s) {missing} of {count} did not finish; rerun them, then merge")
    return [found[index][0] for index in range(count)]


def is_sharded(step: str) -> bool:
    return step in SHARDED_STEPS


def split_argv(argv: list[str], drop: Sequence[str]) -> list[str]:
    """`argv` without the options in `drop` and their values."""
    kept, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word in drop:
            skip = True
        else:
            kept.append(word)
    return kept


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def shard_argv(argv: list[str], folder: str, index: int, count: int) -> list[str]:
    """A task's command line for one shard: same inputs, the shard's folder as --out."""
    replaced = list(argv)
    replaced[replaced.index("--out") + 1] = f"{folder}/{index}"
    return [*replaced, "--shard", f"{index}/{count}"]


def merge_argv(step: str, argv: list[str], folder: str) -> list[str]:
    return [*split_argv(argv, SHARDED_STEPS[step].merge_drops), "--merge-shards", folder]


def local_plan(step: str, argv: list[str], requested: int | None = None) -> list[dict[str, int]]:
    sharded = SHARDED_STEPS[step]
    table = Path(option(argv, sharded.size_arg)) / sharded.size_file if sharded.size_file else \
        Path(option(argv, sharded.size_arg))
    return plan(rows_in(table), requested or os.cpu_count() or 1, sharded.min_per_shard)


def run_local(step: str, argv: list[str], env: Mapping[str, str], echo: Callable[[str], None] = print,
              requested: int | None = None) -> int:
    """Plan, the shards as parallel processes (one worker each), then the merge; the exit code of the first failure.

    Shards already finished under the same plan are kept, so a rerun redoes only the failed ones.
    """
    out = option(argv, "--out")
    folder = out + SHARDS_SUFFIX
    shards = local_plan(step, argv, requested)
    task = fingerprint.of_argv(argv)["digest"]
    running = []
    for shard in shards:
        if _finished(Path(folder) / str(shard["index"]), shard, task):
            echo(f"  shard {shard['index']}/{shard['count']}: done earlier, kept")
            continue
        command = [*shard_argv(argv, folder, shard["index"], shard["count"]), "--workers", "1"]
        running.append((shard, subprocess.Popen([sys.executable, "-m", "jobs.cli", *command], env=dict(env))))
    started = time.time()
    failed = [(shard, process.wait()) for shard, process in running]
    failed = [(shard, code) for shard, code in failed if code != 0]
    if running:
        echo(f"  {len(running)} of {len(shards)} shard(s) ran in parallel in {time.time() - started:.1f}s")
    if failed:
        echo(f"  shard(s) {[s['index'] for s, _ in failed]} of {len(shards)} failed; a rerun redoes only those")
        return failed[0][1]
    return subprocess.run([sys.executable, "-m", "jobs.cli", *merge_argv(step, argv, folder)], env=dict(env)).returncode


def main(argv: list[str]) -> int:
    """`python -m common.shards STEP --option ...`: one sharded task as the local runner starts it, leading its own
    process group; the shards and the merge share that group, so the runner's stop reaches all of them, and so does
    the parent-death SIGTERM of a runner killed outright (passed on to the group)."""
    from jobs.startup import stop_group_on_sigterm

    stop_group_on_sigterm()
    if not argv or not is_sharded(argv[0]):
        print(f"usage: python -m common.shards {{{','.join(SHARDED_STEPS)}}} OPTIONS...", file=sys.stderr)
        return 2
    try:
        return run_local(argv[0], argv, os.environ, echo=lambda line: print(line, flush=True))
    except (UnusableInput, OSError, ValueError) as error:
        print(f"mammo {argv[0]}: shard plan: {error}", file=sys.stderr)
        return 2


def _finished(folder: Path, shard: dict[str, int], task: str) -> bool:
    """Finished under the same plan, for the task as it is now (not for inputs that have changed since)."""
    marker = folder / SUCCESS
    if not marker.is_file():
        return False
    record = json.loads(marker.read_text())
    return record.get("shard") == shard and fingerprint.of_task(record.get("fingerprint") or {})["digest"] == task


def record(index: int, count: int) -> dict[str, Any]:
    """What a shard writes into its `_SUCCESS.json` (the merge and a rerun check it)."""
    return {"index": index, "count": count}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
