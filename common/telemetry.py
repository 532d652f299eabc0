"""Prometheus Pushgateway telemetry (to be completed by the Kubernetes issue)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator


@dataclass
class StepRun:
    step: str
    succeeded: bool = False


@contextmanager
def step_run(step: str, profile: str | None = None) -> Iterator[StepRun]:
    yield StepRun(step)


def push_epoch(step: str, epoch: int, logs: dict[str, float]) -> None:
    """Per-epoch training metrics; a no-op until the Pushgateway client lands."""


def push_model_metrics(row: str, metrics: dict[str, float]) -> None:
    """Final metrics of one report row; a no-op until the Pushgateway client lands."""
