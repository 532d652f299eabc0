"""Local runner: executes the pipeline definition's tasks in order inside one work directory.

It is the embedded default (no cluster): the same task list the Argo YAML is rendered from, each task
a `mammo` subprocess exactly as a container would run it. A task whose folder already holds
`_SUCCESS.json` is skipped, so a stopped run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common import shards
from common.artifacts import SUCCESS, atomic_write_json
from common.pipeline import Task

Echo = Callable[[str], None]
CPU_SECONDS = "cpu_seconds.json"  # core-seconds per task, beside timings.json (wall seconds)


class TaskFailed(RuntimeError):
    """A task exited non-zero; its folder has no `_SUCCESS.json`, so a rerun starts there."""


def run_tasks(tasks: list[Task], workdir: Path, echo: Echo = print) -> dict[str, float]:
    """Run every task not yet done; returns wall seconds per task run now (skipped tasks are absent)."""
    workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    width = len(str(len(tasks)))
    for number, task in enumerate(tasks, start=1):
        prefix = f"[{number:>{width}}/{len(tasks)}] {task.name}"
        if (workdir / task.name / SUCCESS).is_file():
            echo(f"{prefix}: done earlier, skipped")
            continue
        echo(f"{prefix}: mammo {' '.join(task.argv(workdir))}")
        started, cpu_before = time.time(), _children_cpu_seconds()
        if shards.is_sharded(task.step):  # the same shard plan as on Argo, shards as parallel processes
            returncode = shards.run_local(task.step, task.argv(workdir), _child_env(task.name), echo)
        else:
            argv = [sys.executable, "-m", "jobs.cli", *task.argv(workdir)]
            returncode = subprocess.run(argv, env=_child_env(task.name)).returncode
        timings[task.name] = round(time.time() - started, 1)
        cpu[task.name] = round(_children_cpu_seconds() - cpu_before, 1)
        if returncode != 0:
            raise TaskFailed(f"task {task.name} failed with exit code {returncode}; rerun to resume")
        echo(f"{prefix}: finished in {timings[task.name]:.1f}s")
    _record_timings(workdir, timings)
    _record_timings(workdir, cpu, CPU_SECONDS)
    return timings


def _child_env(task_name: str) -> dict[str, str]:
    """MAMMO_TASK keeps the Pushgateway groups of tasks sharing a step (six baseline-infer runs) apart."""
    env = {**os.environ, "MAMMO_TASK": task_name}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("PIPELINE_ID", "local")
    return env


def _children_cpu_seconds() -> float:
    """User + system CPU seconds of every finished child process and its own children (worker pools)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _record_timings(workdir: Path, timings: dict[str, float], name: str = "timings.json") -> None:
    """Accumulate per-task wall (or CPU) seconds across resumed runs; the report and the benchmark read them."""
    path = workdir / name
    previous = json.loads(path.read_text()) if path.is_file() else {}
    atomic_write_json(path, {**previous, **timings})
