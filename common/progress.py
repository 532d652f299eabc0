"""Progress that reads well on a terminal and in a log file.

On a terminal: a tqdm bar. Anywhere else (a pipeline log, a pod's log, a CI job) a carriage-return bar
becomes one ever-growing line of redraws, so there it is one plain line every `LOG_STEP_PERCENT` percent
("preprocess: 40/160 files (25%), 12s").
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

LOG_STEP_PERCENT = 10
T = TypeVar("T")


class LogProgress:
    """The subset of tqdm's interface the steps use (update, close, context manager), as log lines."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0, step_percent: int = LOG_STEP_PERCENT):
        self.total, self.desc, self.unit, self.step = total, desc, unit, step_percent
        self.done = initial  # items done by an earlier, interrupted run
        self.next_percent = (100 * initial // total // step_percent + 1) * step_percent if total else step_percent
        self.started = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        percent = 100 * self.done // self.total if self.total else 100
        if percent >= self.next_percent:
            self.next_percent = (percent // self.step + 1) * self.step
            plural = self.unit + ("es" if self.unit.endswith(("s", "ch")) else "s")
            print(f"{self.desc}: {self.done}/{self.total} {plural} ({percent}%), "
                  f"{time.monotonic() - self.started:.0f}s", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Silent(LogProgress):
    def update(self, n: int = 1) -> None:
        self.done += n


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True, initial: int = 0) -> Any:
    """A tqdm bar on a terminal, log lines elsewhere, nothing when disabled."""
    if not enabled:
        return _Silent(total, desc, unit, initial)
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, initial=initial)
    return LogProgress(total, desc, unit, initial)


def track(items: Iterable[T], total: int, desc: str, unit: str, enabled: bool = True) -> Iterator[T]:
    """Iterate `items`, reporting progress as `progress_bar` does."""
    with progress_bar(total, desc, unit, enabled) as bar:
        for item in items:
            yield item
            bar.update()
