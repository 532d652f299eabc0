"""One writer per folder, and a finished folder replaced whole or not at all.

A work folder (`pipeline run`) and every step output folder are locked while written, by `flock` on a
file next to the folder (`.NAME.lock`; next to it, not inside, so it survives the folder being replaced).
The kernel releases the lock when its holder dies, however it dies, so a stale lock cannot exist; a
second writer refuses at once with the holder's pid.

A step run into a folder holding the finished result of a different fingerprint (other arguments,
profile or inputs) writes into `.NAME.next` beside it and swaps it in only once finished, so the folder
holds the old complete run until the new one is complete, then the new one alone: never a mix. A
folder whose unfinished run had the same fingerprint is continued in place (training resumes there).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common.artifacts import FINGERPRINT, SUCCESS, UnusableInput
from common.fingerprint import recorded


class FolderBusy(UnusableInput):
    """Another process holds the folder's lock."""


def lock_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.lock"


@contextmanager
def locked(folder: str | Path, what: str, **info: Any) -> Iterator[dict[str, Any]]:
    """Hold `folder`'s lock for the block; yields what the previous holder wrote into the lock file."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(folder), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            raise FolderBusy(
                f"{what} {folder} is in use by pid {holder.get('pid', '?')} ({holder.get('command', 'mammo')}, "
                f"since {holder.get('since', '?')}); wait for it to finish or stop it"
            ) from None
        previous = _read(fd)
        entry = {"pid": os.getpid(), "command": _command(), "since": time.strftime("%Y-%m-%d %H:%M:%S"), **info}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(entry).encode(), 0)
        yield previous
    finally:
        os.close(fd)  # releases the lock


def holder_pid(folder: str | Path) -> int | None:
    """The pid recorded by the current (or last) holder of `folder`'s lock."""
    try:
        return int(json.loads(lock_path(Path(folder)).read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


@contextmanager
def step_folder(out: str | Path, fingerprint: dict[str, Any]) -> Iterator[Path]:
    """Lock a step's output folder and yield where the step writes (the folder, or its `.next` stand-in)."""
    out = Path(out)
    with locked(out, "output folder", fingerprint=fingerprint["digest"]) as previous:
        target = _target(out, fingerprint["digest"], previous)
        claim = FINGERPRINT.set((target, fingerprint))
        try:
            yield target
        finally:
            FINGERPRINT.reset(claim)
        if target != out and (target / SUCCESS).is_file():
            _swap(target, out)


def _target(out: Path, digest: str, previous: dict[str, Any]) -> Path:
    staging = out.parent / f".{out.name}.next"
    done = recorded(out) if (out / SUCCESS).is_file() else None
    if (out / SUCCESS).is_file() and (done or {}).get("digest") == digest:
        return out  # the same run again: safe in place
    if not (out / SUCCESS).is_file():
        ours = previous.get("fingerprint") == digest and previous.get("target") != "next"
        if ours or not previous or not out.exists():
            return out  # resuming the same run (or a folder no step claimed before: as it always was)
    resuming = staging.exists() and previous.get("fingerprint") == digest and previous.get("target") == "next"
    if not resuming:
        shutil.rmtree(staging, ignore_errors=True)
        print(f"{out} holds another run (different fingerprint): writing beside it, replacing it when done",
              file=sys.stderr)
    _note_target(out, "next")
    return staging


def _note_target(out: Path, target: str) -> None:
    path = lock_path(out)
    entry = json.loads(path.read_text() or "{}")
    entry["target"] = target
    path.write_text(json.dumps(entry))


def _swap(staging: Path, out: Path) -> None:
    """Old complete folder out of the way, new one in: at no moment does `out` hold parts of both."""
    old = out.parent / f".{out.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.rename(out, old)
    os.rename(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def _read(fd: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 1 << 16, 0) or b"{}")
    except ValueError:
        return {}


def _command() -> str:
    """`mammo STEP` (with the action of `pipeline run`), for the refusal message of a second writer."""
    words = sys.argv[1:3]
    return " ".join(["mammo", *(words if words[1:] and words[1] in ("run", "plan") else words[:1])])
