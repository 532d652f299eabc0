"""A pool that loses a worker to SIGKILL: lost tasks are retried, a task that kills every worker is the caller's
failure, the rest of the batch goes on (issue 15, item 3). Real spawned processes, real signals."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from common.workers import map_surviving


def square_or_die(task: tuple[int, str, str]) -> int:
    """SIGKILLs its own worker: always for mode 'always', only the first time for mode 'once'."""
    value, mode, marker = task
    if mode == "always" or (mode == "once" and not Path(marker).exists()):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return value * value


def test_a_killed_worker_costs_a_retry_and_a_killer_task_one_failure(tmp_path, capfd):
    tasks = [(v, "", str(tmp_path / f"{v}")) for v in range(8)]
    tasks[2] = (2, "once", str(tmp_path / "once"))
    tasks[5] = (5, "always", str(tmp_path / "always"))
    done = []
    results = list(map_surviving(square_or_die, tasks, 2, on_lost=lambda task: -task[0],
                                 done=lambda: done.append(1), label="test pool"))
    assert results == [0, 1, 4, 9, 16, -5, 36, 49]
    assert len(done) == len(tasks)
    assert "test pool: a worker process died; retrying" in capfd.readouterr().err


def test_an_undisturbed_pool_gives_results_in_task_order():
    tasks = [(v, "", "") for v in range(20)]
    assert list(map_surviving(square_or_die, tasks, 2, on_lost=lambda task: None)) == [v * v for v in range(20)]


SETUP: list[tuple] = []


def remember_setup(*args) -> None:
    SETUP.append(args)


def test_run_tasks_gives_the_same_ordered_results_in_process_and_on_a_pool():
    """The CPU steps' one runner: one worker means no pool (the initializer runs here with its in-process
    arguments), several a surviving pool; either way results in task order and one done() per task."""
    from common.workers import run_tasks

    tasks = [(v, "", "") for v in range(9)]
    SETUP.clear()
    done = []
    local = list(run_tasks(square_or_die, tasks, 1, on_lost=lambda task: None, label="t", done=lambda: done.append(1),
                           initializer=remember_setup, initargs=("pool",), in_process_initargs=("here",)))
    assert local == [v * v for v in range(9)] and len(done) == 9 and SETUP == [("here",)]
    pooled = list(run_tasks(square_or_die, tasks, 2, on_lost=lambda task: None, label="t", done=lambda: done.append(1),
                            initializer=remember_setup, initargs=("pool",)))
    assert pooled == local and len(done) == 18 and SETUP == [("here",)]  # the pool's initializer ran in its workers
