"""Worker pools that survive the death of a worker process.

The out-of-memory killer (or an operator's `kill -9`) ends one worker, and a ProcessPoolExecutor then fails
every task still queued with BrokenProcessPool: without care one dead worker ends the whole batch. Here the
tasks a broken pool lost are retried once each, one at a time in a fresh single-worker pool, so the file
that killed its worker is known exactly: a task that kills its worker a second time becomes the caller's
per-task failure (`on_lost`), and every other lost task simply succeeds on its retry.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_surviving(
    fn: Callable[[T], R],
    tasks: Sequence[T],
    workers: int,
    on_lost: Callable[[T], R],
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
    done: Callable[[], None] = lambda: None,
    label: str = "worker pool",
) -> Iterator[R]:
    """`fn` over `tasks` on `workers` spawned processes; results in task order; `done()` after each task."""
    results: dict[int, R] = {}
    following = 0

    def ready() -> Iterator[R]:
        nonlocal following
        while following in results:
            yield results.pop(following)
            following += 1

    lost: list[int] = []
    with _pool(workers, initializer, initargs) as pool:
        futures: dict[Future, int] = {pool.submit(fn, task): index for index, task in enumerate(tasks)}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when="FIRST_COMPLETED")
            for future in finished:
                try:
                    results[futures[future]] = future.result()
                except BrokenProcessPool:
                    lost.append(futures[future])
                    continue
                done()
            yield from ready()
    if lost:
        print(f"{label}: a worker process died; retrying the {len(lost)} task(s) it took down, one at a time",
              file=sys.stderr)
    retry = None
    try:
        for index in sorted(lost):
            retry = retry or _pool(1, initializer, initargs)
            try:
                results[index] = retry.submit(fn, tasks[index]).result()
            except BrokenProcessPool:
                results[index] = on_lost(tasks[index])
                retry.shutdown(wait=True)
                retry = None
            done()
            yield from ready()
    finally:
        if retry is not None:
            retry.shutdown(wait=True)
    yield from ready()


def run_tasks(
    fn: Callable[[T], R],
    tasks: Sequence[T],
    requested: int | None,
    *,
    on_lost: Callable[[T], R],
    label: str,
    done: Callable[[], None] = lambda: None,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
    in_process_initargs: tuple[Any, ...] | None = None,
) -> Iterator[R]:
    """`fn` over `tasks`, results in task order, `done()` after each: the batch runner of the CPU steps.

    One worker (`worker_count`) runs the tasks in this process - no pool to spawn for a small batch - after
    `initializer(*in_process_initargs)` when those are given; more run on `map_surviving`'s pool.
    """
    workers = worker_count(requested, len(tasks))
    if workers > 1:
        yield from map_surviving(fn, tasks, workers, on_lost=on_lost, initializer=initializer, initargs=initargs,
                                 done=done, label=label)
        return
    if initializer is not None and in_process_initargs is not None:
        initializer(*in_process_initargs)
    for task in tasks:
        result = fn(task)
        done()
        yield result


def worker_count(requested: int | None, tasks: int) -> int:
    """Processes worth starting: the request (default: all cores), never more than there are tasks."""
    return max(1, min(requested or os.cpu_count() or 1, tasks or 1))


def _pool(workers: int, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> ProcessPoolExecutor:
    # spawn, not fork: the parent may hold TensorFlow's or OpenCV's threads, which fork would copy mid-state
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=initializer, initargs=initargs)
