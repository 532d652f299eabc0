"""Local runner: executes the pipeline definition's tasks inside one work directory, a task as soon as the tasks
it reads from have finished and up to `jobs` at once (as Argo runs the same DAG). Of the tasks ready, the one
with the longest path to the end of the DAG starts first, and a task started beside one on a longer path runs
niced, so the critical path keeps the cores a laptop has and the rest fills the cycles it leaves.

It is the embedded default (no cluster): the same task list the Argo YAML is rendered from, each task
`mammo` with the argv a container would run, in a process of its own: forked from an interpreter that imported
TensorFlow and the steps once (common.preloaded), or a sharded one as `python -m common.shards`, which starts its
shards and merge inside the task's process group. A task is skipped when its folder holds
`_SUCCESS.json` with the fingerprint the task would have now (common.fingerprint); otherwise it reruns,
and so does everything downstream of it, each with a one-line reason. The work folder is locked for the
whole run; a SIGTERM or SIGINT to the runner goes to every running task's whole process group (its pool
workers too), so stopping the runner leaves nothing behind that still writes, and a runner killed
outright (SIGKILL) takes its task with it (the kernel's parent-death signal).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from common import fingerprint, preloaded, shards, workfolder
from common.artifacts import SUCCESS, UnusableInput, atomic_write_json
from common.pipeline import Task
from common.steps import STEPS

Echo = Callable[[str], None]
# Runs one task's `mammo` argv and returns its exit code (default: a child process of its own group, `execute`).
Execute = Callable[[Task, list[str]], int]
CPU_SECONDS = "cpu_seconds.json"  # core-seconds per task, beside timings.json (wall seconds)
PRELOADED = "(preloaded interpreter)"  # its entry in cpu_seconds.json: the one import the forked tasks share
ELAPSED = "elapsed.json"  # the last run's own wall time: with tasks side by side, less than their sum
SKIPPED = "done earlier, skipped"
# How long a stopped task may take to exit before its process group is killed.
STOP_GRACE_SECONDS = 10.0
# Niceness of a task started beside one on a longer path to the end of the DAG: on a laptop's few cores it then
# takes only the cycles the critical path leaves idle, instead of half of them.
BACKGROUND_NICENESS = 10


class TaskFailed(RuntimeError):
    """A task exited non-zero; its folder has no `_SUCCESS.json`, so a rerun starts there."""


class Stopped(RuntimeError):
    """The runner was asked to stop (SIGTERM/SIGINT) and stopped its task first."""

    def __init__(self, signum: int, *tasks: str):
        names = f"task {tasks[0]}" if len(tasks) == 1 else f"tasks {', '.join(tasks)}"
        super().__init__(f"stopped by {signal.Signals(signum).name} during {names}; rerun to resume")
        self.signum, self.tasks, self.exit_code = signum, tasks, 128 + signum


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
              start: str | None = None, execute: Execute | None = None, jobs: int = 1) -> dict[str, float]:
    """Run every task not up to date, up to `jobs` at once, each as soon as the tasks it reads from have finished
    (as Argo runs a DAG); returns wall seconds per task run now (skipped tasks are absent).

    With one job the tasks run in the definition's order. After a failure nothing new starts and the tasks
    still running finish, so their folders are complete when the rerun starts.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    workdir.mkdir(parents=True, exist_ok=True)
    with workfolder.locked(workdir, "work folder"):
        plan = decide(tasks, workdir, force, start)
        if execute is not None:
            return _run_locked(tasks, workdir, echo, plan, execute, jobs)
        with preloaded.Interpreter() as interpreter:
            try:
                return _run_locked(tasks, workdir, echo, plan, partial(run_task, interpreter=interpreter), jobs)
            finally:
                if interpreter.cpu_seconds:
                    _record_timings(workdir, {PRELOADED: round(interpreter.cpu_seconds, 1)}, CPU_SECONDS)


def path_lengths(tasks: list[Task]) -> dict[str, float]:
    """Each task's longest chain of expected cost from its start to the end of the DAG, itself included. The
    expected cost of a step is its cluster deadline (common.steps): only the order it gives matters (pretraining
    before fine-tuning before scoring), and it needs no earlier run."""
    children: dict[str, list[str]] = {task.name: [] for task in tasks}
    for task in tasks:
        for upstream in task.depends:  # an upstream task may lie outside the list (a part of the DAG is run)
            children.setdefault(upstream, []).append(task.name)
    longest: dict[str, float] = {}
    for task in reversed(tasks):  # the definition is in topological order: children come first here
        step = STEPS.get(task.step)
        cost = float(step.resources.deadline_seconds) if step is not None and step.resources else 1.0
        longest[task.name] = cost + max((longest[c] for c in children[task.name]), default=0.0)
    return longest


def run_task(task: Task, argv: list[str], interpreter: preloaded.Interpreter | None = None) -> int:
    """A task as a process leading its own group: forked from the preloaded interpreter when one is given, else a
    `mammo` child process; a sharded one as `python -m common.shards`: the same shard plan as on Argo, its shards
    and merge as processes of that group."""
    if shards.is_sharded(task.step):
        return run_child([sys.executable, "-m", "common.shards", *argv], task.name)
    if interpreter is not None:
        return run_forked(argv, task.name, interpreter)
    return run_child([sys.executable, "-m", "jobs.cli", *argv], task.name)


class _Running:
    """The process groups of the tasks running now, the stop request a signal left, and each finished task's
    core-seconds (from its own wait4, so tasks running side by side are charged only what they used)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.groups: dict[str, int] = {}
        self.cpu: dict[str, float] = {}
        self.niceness: dict[str, int] = {}  # set by the runner as it starts a task, read by run_child
        self.stop: int | None = None

    def request_stop(self, signum: int, _frame: object = None) -> None:
        with self.lock:
            if self.stop is None:
                self.stop = signum
            groups = list(self.groups.values())
        for pgid in groups:
            _signal_group(pgid, signum)


RUNNING = _Running()


@contextmanager
def _stop_requests() -> Iterator[None]:
    """SIGTERM/SIGINT to the runner go to every running task's group (only the main thread can take signals)."""
    RUNNING.stop = None
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, RUNNING.request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run_locked(tasks: list[Task], workdir: Path, echo: Echo, reasons: list[str | None],
                execute: Execute, jobs: int) -> dict[str, float]:
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    width = len(str(len(tasks)))
    prefixes = {task.name: f"[{n:>{width}}/{len(tasks)}] {task.name}" for n, task in enumerate(tasks, start=1)}
    reruns = {task.name: reason for task, reason in zip(tasks, reasons, strict=True) if reason is not None}
    for task in tasks:
        if task.name not in reruns:
            echo(f"{prefixes[task.name]}: {SKIPPED}")
    waiting = [task for task in tasks if task.name in reruns]
    paths = path_lengths(tasks)
    finished: set[str] = set()
    failure: BaseException | None = None
    stopped: list[Stopped] = []
    began = time.time()
    try:
        with _stop_requests(), ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="task") as pool:
            running: dict[Future, Task] = {}
            while waiting or running:
                if failure is None and not stopped and RUNNING.stop is None:
                    ready = [t for t in waiting if all(d in finished or d not in reruns for d in t.depends)]
                    if jobs > 1:  # the longest remaining path first; one job keeps the definition's order
                        ready.sort(key=lambda t: -paths[t.name])
                    for task in ready:
                        if len(running) >= jobs:
                            break
                        waiting.remove(task)
                        ahead = max((paths[t.name] for t in running.values()), default=0.0)
                        with RUNNING.lock:
                            RUNNING.niceness[task.name] = BACKGROUND_NICENESS if paths[task.name] < ahead else 0
                        echo(f"{prefixes[task.name]}: runs ({reruns[task.name]}): mammo {' '.join(task.argv(workdir))}")
                        running[pool.submit(_timed, execute, task, task.argv(workdir))] = task
                if not running:
                    break  # stopping, failed, or (never on a DAG) nothing ready
                done, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in done:
                    task = running.pop(future)
                    try:
                        code, timings[task.name], cpu[task.name] = future.result()
                    except Stopped as error:
                        stopped.append(error)
                        continue
                    except Exception as error:  # an executor's own fault: the others still finish first
                        failure = failure or error
                        continue
                    if code != 0:
                        failure = failure or TaskFailed(f"task {task.name} failed with exit code {code}; "
                                                        "rerun to resume")
                    else:
                        finished.add(task.name)
                        echo(f"{prefixes[task.name]}: finished in {timings[task.name]:.1f}s")
    finally:
        _record_timings(workdir, timings)
        _record_timings(workdir, cpu, CPU_SECONDS)
        if timings:
            atomic_write_json(workdir / ELAPSED, {"seconds": round(time.time() - began, 1), "jobs": jobs,
                                                  "tasks": len(timings)})
    if stopped:  # every task that was running, in the definition's order
        order = {task.name: n for n, task in enumerate(tasks)}
        names = sorted((name for error in stopped for name in error.tasks), key=order.__getitem__)
        raise Stopped(stopped[0].signum, *names)
    if RUNNING.stop is not None and waiting:
        raise Stopped(RUNNING.stop, waiting[0].name)
    if failure is not None:
        raise failure
    return timings


def _timed(execute: Execute, task: Task, argv: list[str]) -> tuple[int, float, float]:
    """(exit code, wall seconds, core-seconds) of one task; an executor without child processes of its own
    (tests) is charged the runner's finished children over its run, exact only one task at a time."""
    started, before = time.time(), _children_cpu_seconds()
    code = execute(task, argv)
    with RUNNING.lock:
        used = RUNNING.cpu.pop(task.name, None)
    if used is None:
        used = _children_cpu_seconds() - before
    return code, round(time.time() - started, 1), round(used, 1)


def run_child(argv: list[str], task_name: str) -> int:
    """Run one task in its own process group; a stop request (see `_stop_requests`) goes to all of it, and a
    group still there after STOP_GRACE_SECONDS is killed. Raises Stopped after a stop."""
    child = subprocess.Popen(argv, env=_child_env(task_name), start_new_session=True,
                             preexec_fn=partial(preloaded.prepare_child, _niceness(task_name)))
    return _supervise(task_name, child.pid, partial(_reaped, child.pid))


def run_forked(argv: list[str], task_name: str, interpreter: preloaded.Interpreter) -> int:
    """`mammo ARGV` forked from the preloaded interpreter, supervised as `run_child` supervises a process."""
    task = interpreter.start(argv, _child_env(task_name), _niceness(task_name))
    try:
        return _supervise(task_name, task.pid, task.poll)
    finally:
        task.close()


def _niceness(task_name: str) -> int:
    with RUNNING.lock:
        return RUNNING.niceness.pop(task_name, 0)


def _reaped(pid: int) -> tuple[int, float] | None:
    """(exit code, core-seconds of it and its finished children) once the child has ended, else None."""
    ended, status, usage = os.wait4(pid, os.WNOHANG)
    return (os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime) if ended else None


def _supervise(task_name: str, group: int, ended: Callable[[], tuple[int, float] | None]) -> int:
    """Wait for the task leading process group `group` to end, passing a stop request on to the group."""
    with RUNNING.lock:
        RUNNING.groups[task_name] = group
        stop = RUNNING.stop
    if stop is not None:  # asked to stop while the task was starting
        _signal_group(group, stop)
    deadline = None
    try:
        while (outcome := ended()) is None:
            if RUNNING.stop is not None and deadline is None:
                deadline = time.monotonic() + STOP_GRACE_SECONDS
            if deadline is not None and time.monotonic() > deadline:
                _signal_group(group, signal.SIGKILL)
            time.sleep(0.1)
    finally:
        with RUNNING.lock:
            RUNNING.groups.pop(task_name, None)
    code, core_seconds = outcome
    with RUNNING.lock:
        RUNNING.cpu[task_name] = core_seconds
    if RUNNING.stop is not None:
        _signal_group(group, signal.SIGKILL)  # pool workers the task left behind
        raise Stopped(RUNNING.stop, task_name)
    return code


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
