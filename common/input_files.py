"""The files of an input folder, and a reason for every path below it that is not one of them.

A study folder must never lose a file without a word: every path the walk meets is either a regular file
to try, or a rejected.csv row saying why not - an unreadable folder (and so everything in it), a dangling
symbolic link, a link loop, a link to a folder (not followed, it could loop or leave the input root), a
named pipe, socket or device, or a file name that is not valid UTF-8 (it could not be written to a CSV
and would not survive an S3 key). Paths are reported relative to the input root, as everywhere else, with
undecodable bytes shown as \\xNN escapes.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from common.artifacts import SUCCESS

_KINDS = {stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFSOCK: "a socket", stat.S_IFBLK: "a block device",
          stat.S_IFCHR: "a character device"}


def display_name(relative: str) -> str:
    """A path as printable text: bytes that are not UTF-8 (surrogate escapes from os.fsdecode) become \\xNN."""
    return os.fsencode(relative).decode("utf-8", "backslashreplace")


def find_input_files(root: Path, skip: set[Path] | frozenset[Path] = frozenset()) -> tuple[list[Path], list[dict]]:
    """(regular files below root in a stable order, rejected rows {file, reason} for every other path).

    Order: a folder's files by name, then its sub-folders by name (depth first), as os.walk gives them.
    `skip` holds resolved paths to leave out silently (the cohort file, the step's own output folder), as
    are `_SUCCESS.json` markers.
    """
    files: list[Path] = []
    rejected: list[dict] = []
    skip = {Path(os.path.realpath(p)) for p in skip}

    def reject(path: Path, reason: str) -> None:
        relative = "." if path == root else path.relative_to(root).as_posix()
        rejected.append({"file": display_name(relative), "reason": reason})

    def visit(folder: Path) -> None:
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as error:
            reject(folder, f"folder not readable ({_describe(error)}): none of its files were looked at")
            return
        folders = []
        for entry in entries:
            path = Path(entry.path)
            if entry.name == SUCCESS or Path(os.path.realpath(path)) in skip:
                continue
            try:
                mode = os.stat(path).st_mode  # follows links: what the path stands for
            except OSError as error:
                reject(path, _unreachable(path, error))
                continue
            if stat.S_ISDIR(mode):
                if entry.is_symlink():
                    reject(path, "symbolic link to a folder: not followed (it could loop or leave the input "
                                 "folder); copy or bind-mount the folder instead")
                else:
                    folders.append(path)
            elif not stat.S_ISREG(mode):
                reject(path, f"not a regular file but {_KINDS.get(stat.S_IFMT(mode), 'a special file')}")
            elif not _utf8(path.relative_to(root).as_posix()):
                reject(path, "file name is not valid UTF-8 (bytes shown as \\xNN): rename the file to process it")
            else:
                files.append(path)
        for sub in folders:
            visit(sub)

    visit(root)
    return files, rejected


def _unreachable(path: Path, error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "symbolic link loop (too many levels of symbolic links)"
    if error.errno == errno.ENOENT and path.is_symlink():
        return "dangling symbolic link: its target does not exist"
    return f"cannot be examined ({_describe(error)})"


def _describe(error: OSError) -> str:
    if isinstance(error, PermissionError):
        return "permission denied"
    return os.strerror(error.errno) if error.errno else type(error).__name__


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
