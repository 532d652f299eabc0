"""Per-file results of an unfinished preprocess run, so the rerun after a kill redoes only the lost files.

`<out>/.partial/` holds, for every input file a worker finished, its outputs (`<key>.png`, `<key>.hires.png`)
and then, written last and atomically, `<key>.json` with the result row (or the rejection) and the
fingerprint it was made under: the file's size and modification time and a digest of everything else the
result depends on (output sizes, spacing, the cohort, the package version). A rerun takes an entry only
when the fingerprint still matches and its PNGs are there; anything else is processed again. The folder is
removed once the step's outputs are complete, so a finished step never publishes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from common import __version__
from common.artifacts import atomic_write_json

FOLDER = ".partial"


def settings_digest(*parts: Any) -> str:
    """A digest of whatever, besides the file itself, decides a file's result."""
    text = json.dumps([__version__, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def entry_key(relative: str) -> str:
    """A fixed-length file name for an input path (paths may be long, nested or not valid UTF-8)."""
    return hashlib.sha256(os.fsencode(relative)).hexdigest()[:32]


def fingerprint(path: Path, digest: str) -> dict[str, Any]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "settings": digest}


def outputs(folder: Path, key: str) -> tuple[Path, Path]:
    """Where a worker writes the two PNGs of one input file before the parent names them by image_id."""
    return folder / f"{key}.png", folder / f"{key}.hires.png"


def record(folder: Path, key: str, stamp: dict[str, Any], result: dict[str, Any]) -> None:
    """Mark one file finished; called after its PNGs are written, so an entry never points at half a result."""
    atomic_write_json(folder / f"{key}.json", {"fingerprint": stamp, "result": result})


def lookup(folder: Path, key: str, stamp: dict[str, Any]) -> dict[str, Any] | None:
    """The result of an earlier run for this file when it is still valid and complete, else None."""
    try:
        entry = json.loads((folder / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("fingerprint") != stamp:
        return None
    result = entry.get("result")
    if not isinstance(result, dict):
        return None
    if "row" in result and not all(p.is_file() for p in outputs(folder, key)):
        return None
    return result


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
