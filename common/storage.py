"""Artifact staging between local folders and S3 (to be completed by the Kubernetes issue)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from common.artifacts import UnusableInput


@contextmanager
def staged(args, input_args: tuple[str, ...], output_arg: str | None) -> Iterator[None]:
    for name in (*input_args, *([output_arg] if output_arg else [])):
        value = getattr(args, name, None)
        if isinstance(value, str) and value.startswith("s3://"):
            raise UnusableInput(f"--{name.replace('_', '-')} {value}: s3:// staging not implemented yet")
    yield
