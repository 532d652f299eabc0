"""Local runner: executes the pipeline definition's tasks in order inside one work directory.

It is the embedded default (no cluster): the same task list the Argo YAML is rendered from, each task
a `mammo` subprocess exactly as a container would run it (a sharded one as `python -m common.shards`, which
starts its shards and merge inside the task's process group). A task is skipped when its folder holds
`_SUCCESS.json` with the fingerprint the task would have now (common.fingerprint); otherwise it reruns,
and so does everything downstream of it, each with a one-line reason. The work folder is locked for the
whole run; a SIGTERM or SIGINT to the runner goes to the running task's whole process group (its pool
workers too), so stopping the runner leaves nothing behind that still writes, and a runner killed
outright (SIGKILL) takes its task with it (the kernel's parent-death signal).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common import fingerprint, shards, workfolder
from common.artifacts import SUCCESS, UnusableInput, atomic_write_json
from common.pipeline import Task

Echo = Callable[[str], None]
# Runs one task's `mammo` argv and returns its exit code (default: a child process of its own group, `execute`).
Execute = Callable[[Task, list[str]], int]
CPU_SECONDS = "cpu_seconds.json"  # core-seconds per task, beside timings.json (wall seconds)
SKIPPED = "done earlier, skipped"
# How long a stopped task may take to exit before its process group is killed.
STOP_GRACE_SECONDS = 10.0
PR_SET_PDEATHSIG = 1


class TaskFailed(RuntimeError):
    """A task exited non-zero; its folder has no `_SUCCESS.json`, so a rerun starts there."""


class Stopped(RuntimeError):
    """The runner was asked to stop (SIGTERM/SIGINT) and stopped its task first."""

    def __init__(self, signum: int, task: str):
        super().__init__(f"stopped by {signal.Signals(signum).name} during task {task}; rerun to resume")
        self.exit_code = 128 + signum


def decide(tasks: list[Task], workdir: Path, force: bool = False, start: str | None = None) -> list[str | None]:
    """Per task, why it runs now (None: its folder is up to date). Reruns propagate to all descendants."""
    names = [task.name for task in tasks]
    if start is not None and start not in names:
        raise UnusableInput(f"--from {start}: no such task (tasks: {', '.join(names)})")
    reasons: dict[str, str | None] = {}
    for task in tasks:
        reasons[task.name] = _reason(task, workdir, force, start, reasons)
    return [reasons[name] for name in names]


def _reason(task: Task, workdir: Path, force: bool, start: str | None, earlier: dict[str, str | None]) -> str | None:
    if force:
        return "--force"
    if task.name == start:
        return f"--from {start}"
    folder = workdir / task.name
    if not (folder / SUCCESS).is_file():
        return "unfinished earlier run" if folder.exists() else "not run yet"
    upstream = [name for name in task.depends if earlier.get(name)]
    if upstream:
        return f"{upstream[0]} reruns" + (f" (and {len(upstream) - 1} more)" if len(upstream) > 1 else "")
    return fingerprint.explain(fingerprint.recorded(folder), fingerprint.of_argv(task.argv(workdir)))


def run_tasks(tasks: list[Task], workdir: Path, echo: Echo = print, force: bool = False,
              start: str | None = None, execute: Execute | None = None) -> dict[str, float]:
    """Run every task not up to date; returns wall seconds per task run now (skipped tasks are absent)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with workfolder.locked(workdir, "work folder"):
        return _run_locked(tasks, workdir, echo, decide(tasks, workdir, force, start), execute or run_task)


def run_task(task: Task, argv: list[str]) -> int:
    """A task as a child process leading its own group; a sharded one as `python -m common.shards`: the same shard
    plan as on Argo, its shards and merge as processes of that group."""
    program = "common.shards" if shards.is_sharded(task.step) else "jobs.cli"
    return _run_child([sys.executable, "-m", program, *argv], task.name)


def _run_locked(tasks: list[Task], workdir: Path, echo: Echo, reasons: list[str | None],
                execute: Execute) -> dict[str, float]:
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    width = len(str(len(tasks)))
    try:
        for number, (task, reason) in enumerate(zip(tasks, reasons, strict=True), start=1):
            prefix = f"[{number:>{width}}/{len(tasks)}] {task.name}"
            if reason is None:
                echo(f"{prefix}: {SKIPPED}")
                continue
            echo(f"{prefix}: runs ({reason}): mammo {' '.join(task.argv(workdir))}")
            started, cpu_before = time.time(), _children_cpu_seconds()
            code = execute(task, task.argv(workdir))
            timings[task.name] = round(time.time() - started, 1)
            cpu[task.name] = round(_children_cpu_seconds() - cpu_before, 1)
            if code != 0:
                raise TaskFailed(f"task {task.name} failed with exit code {code}; rerun to resume")
            echo(f"{prefix}: finished in {timings[task.name]:.1f}s")
    finally:
        _record_timings(workdir, timings)
        _record_timings(workdir, cpu, CPU_SECONDS)
    return timings


def _run_child(argv: list[str], task_name: str) -> int:
    """Run one task in its own process group and pass a stop request on to all of it."""
    stop: list[int] = []
    started: list[subprocess.Popen] = []

    def forward(signum: int, _frame) -> None:
        if not stop:
            stop.append(signum)
            if started:
                _signal_group(started[0].pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        child = subprocess.Popen(argv, env=_child_env(task_name), start_new_session=True,
                                 preexec_fn=_die_with_parent)
        started.append(child)
        if stop:  # asked to stop while the task was starting
            _signal_group(child.pid, stop[0])
        deadline = None
        while True:
            try:
                code = child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stop and deadline is None:
                    deadline = time.monotonic() + STOP_GRACE_SECONDS
                if deadline is not None and time.monotonic() > deadline:
                    _signal_group(child.pid, signal.SIGKILL)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if stop:
        _signal_group(child.pid, signal.SIGKILL)  # pool workers the task left behind
        raise Stopped(stop[0], task_name)
    return code


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the runner dies, even by SIGKILL (Linux prctl)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: SIGTERM/SIGINT forwarding still applies


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


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
    if not timings:
        return
    path = workdir / name
    previous = json.loads(path.read_text()) if path.is_file() else {}
    atomic_write_json(path, {**previous, **timings})
