"""Step output contract: files appear atomically and `_SUCCESS.json` is written last.

A downstream step refuses a directory without `_SUCCESS.json`, so a crashed or killed step can never
feed half-written outputs forward; re-running a step first removes its stale marker.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from common import __version__

if TYPE_CHECKING:
    from common.profile import Profile

SUCCESS = "_SUCCESS.json"
# (output folder, fingerprint) of the step the CLI is running: step_output records it in that folder's marker.
FINGERPRINT: ContextVar[tuple[Path, dict[str, Any]] | None] = ContextVar("fingerprint", default=None)


class UnusableInput(Exception):
    """Raised for input a step cannot use; the CLI turns it into exit code 2 and one line on stderr."""


def require_success(directory: str | Path) -> dict[str, Any]:
    """Return the upstream step's marker, refusing directories a step did not finish."""
    marker = Path(directory) / SUCCESS
    if not marker.is_file():
        raise UnusableInput(f"{directory} has no {SUCCESS}: its step did not finish")
    return json.loads(marker.read_text())


def one_line(text: str, limit: int = 300) -> str:
    """The first line of a message, for a rejected.csv reason or a log line; a long one is cut at a word."""
    first = text.strip().splitlines()[0].strip() if text.strip() else "no detail"
    if len(first) <= limit:
        return first
    cut = first.rfind(" ", 0, limit + 1)
    return first[: cut if cut > 0 else limit].rstrip() + " ..."


def error_line(error: BaseException, limit: int = 300) -> str:
    """`one_line` of an exception's message, its type name when the message is empty: the reason a report note,
    a rejected.csv row or a usage error quotes."""
    return one_line(str(error), limit) if str(error).strip() else type(error).__name__


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temporary file in the same directory and rename, so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n")


# A cell starting with one of these is run as a formula by Excel, LibreOffice or Google Sheets, and file
# names, ids and reasons in our CSVs come from outside (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ID_COLUMNS = ("patient_id", "image_id", "pair_id")
_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def atomic_write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    """The one CSV writer of the project: text cells that would start a formula get a leading `'`."""
    atomic_write_text(path, neutralise_formulas(frame).to_csv(index=False))


def read_table(path: str | Path, columns: Sequence[str]) -> pd.DataFrame:
    """The one reader of a step's CSV table: ids stay text (patient 007 is not patient 7), and a missing file or
    column is unusable input (one line), not a KeyError deep in a step."""
    path = Path(path)
    if not path.is_file():
        raise UnusableInput(f"{path} is missing")
    frame = pd.read_csv(path, dtype=dict.fromkeys(ID_COLUMNS, str))
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UnusableInput(f"{path} lacks column(s) {', '.join(missing)}")
    return frame


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells cannot start a spreadsheet formula; numbers (also '-0.5' as text) stay as they are.

    The prefix is the spreadsheet convention for "this is text", so a reader sees the value unchanged.
    A carriage return inside a cell becomes a (quoted) line break.
    """
    text_columns = [c for c in frame.columns if frame[c].dtype == object or pd.api.types.is_string_dtype(frame[c])]
    if not text_columns:
        return frame
    frame = frame.copy()
    for column in text_columns:
        frame[column] = frame[column].map(_neutralise_cell)
    return frame


def _neutralise_cell(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.match(value):
        value = "'" + value
    # The csv module quotes a cell holding "\n" but not one holding a bare "\r", which then ends the row.
    return value.replace("\r\n", "\n").replace("\r", "\n")


def plain(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (JSON knows no numpy types); anything else as it is."""
    return value.item() if hasattr(value, "item") else value


def json_default(value: Any) -> Any:
    """json.dumps' `default`: numpy scalars as numbers, paths as text, anything else refused."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finite_json(value: Any) -> Any:
    """A copy that strict JSON can hold: numpy scalars as numbers, tuples as lists, NaN and infinities as null
    (a missing number)."""
    if isinstance(value, dict):
        return {str(k): finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    value = plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class StepRecord:
    """What a step reports about itself; becomes `_SUCCESS.json`."""

    def __init__(self, step: str, out_dir: Path, inputs: dict[str, Any]):
        self.step = step
        self.out_dir = out_dir
        self.inputs = inputs
        self.counts: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self.extra: dict[str, Any] = {}
        self.started = time.time()

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "inputs": self.inputs,
            "counts": self.counts,
            "timings": {**self.timings, "total_seconds": round(time.time() - self.started, 3)},
            "versions": _versions(),
            "finished_unixtime": time.time(),
            **self.extra,
        }


@contextmanager
def step_output(step: str, out_dir: str | Path, inputs: dict[str, Any],
                profile: Profile | None = None) -> Iterator[StepRecord]:
    """Run a step body against `out_dir`; writes `_SUCCESS.json` only if the body returns normally.

    A step that ran with a profile records it here, the same way for every step: `"profile": {"name", "values"}`
    (the name or file it was given, and the resolved values, defaults included)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SUCCESS).unlink(missing_ok=True)
    record = StepRecord(step, out, {k: str(v) for k, v in inputs.items()})
    if profile is not None:
        record.extra["profile"] = profile.record()
    claimed = FINGERPRINT.get()
    if claimed is not None and claimed[0].absolute() == out.absolute():
        record.extra["fingerprint"] = claimed[1]
    yield record
    atomic_write_json(out / SUCCESS, record.as_dict())


def _versions() -> dict[str, str]:
    versions = {"mammo": __version__, "python": sys.version.split()[0], "platform": platform.machine()}
    for module in ("numpy", "pandas", "pydicom", "cv2", "sklearn", "tensorflow", "keras"):
        loaded = sys.modules.get(module)
        if loaded is not None:
            versions[module] = getattr(loaded, "__version__", "?")
    return versions
