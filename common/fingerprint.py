"""What a step's result depends on, as one digest: recorded in `_SUCCESS.json`, compared by the runner.

The parts of a fingerprint:
- `args`: the step's options and their values, order-free; `--out` and options that cannot change the
  result (`--workers`, `--s3-endpoint`) are left out, paths are replaced by what they point to.
- `profile`: the profile values the step reads (its `profile_reads` in common.steps, by dotted key,
  `{--option}` standing for that option's value); steps without them (the report) depend on the whole profile.
- `inputs`: per option, what its path holds. A folder written by a step (it, or a parent, holds
  `_SUCCESS.json`) counts by the hash of that marker, which carries its own fingerprint and run time, so
  any rerun upstream makes its descendants stale; a work folder (the report's `--workdir`) by the markers
  of the step folders in it; any other file by its content hash (up to 64 MiB, else size and mtime); any
  other folder by the size and mtime of every file in it. s3:// URIs count as their text.
- `version`: the package version.

It is computed from the argv alone, without the step's parser, so the runner predicts a task's
fingerprint without importing the step (and TensorFlow); the CLI records the same function's result.

A sharded task (common.shards) is the one exception: its result is written by the merge, whose command line
lacks the inputs only the shards read. Each shard records the task's fingerprint plus its `--shard I/N`, so
the merge records the task's own fingerprint (`of_shards`), and the runner decides from the merged folder alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import __version__
from common.artifacts import SUCCESS
from common.profile import DEFAULT_PROFILE, load_profile
from common.steps import STEPS

IGNORED_OPTIONS = frozenset({"--out", "--workers", "--s3-endpoint", "--work"})  # --work: retrain's scratch
HASHED_FILE_BYTES = 64 << 20
SHARD_OPTION, MERGE_OPTION = "--shard", "--merge-shards"


def parse_argv(argv: Sequence[str]) -> tuple[str, dict[str, list[str]]]:
    """(step, option -> values) of `mammo STEP --option value ...`; `--option=value` is split."""
    step, current = argv[0], None
    options: dict[str, list[str]] = {}
    for token in argv[1:]:
        if token.startswith("--"):
            current, eq, value = token.partition("=")
            options.setdefault(current, [])
            if eq:
                options[current].append(value)
        else:
            options.setdefault(current or "", []).append(token)
    return step, options


def of_argv(argv: Sequence[str]) -> dict[str, Any]:
    """{"digest": hex, "parts": {...}} of one step invocation (see the module docstring)."""
    step, options = parse_argv(argv)
    if MERGE_OPTION in options:
        merged = of_shards(options[MERGE_OPTION][0])
        if merged is not None:
            return merged
    out = options.get("--out", [None])[0]
    parts: dict[str, Any] = {"step": step, "args": {}, "inputs": {}, "version": __version__}
    for option, values in sorted(options.items()):
        if option in IGNORED_OPTIONS or option == "--profile":
            continue
        described = [_describe(value, out) for value in values]
        if any(isinstance(d, dict) for d in described):
            parts["inputs"][option] = described
        else:
            parts["args"][option] = values
    profile_name = (options.get("--profile") or [DEFAULT_PROFILE])[0]
    parts["profile"] = profile_values(step, load_profile(profile_name).to_dict(), options)
    return {"digest": _digest(parts), "parts": parts}


def of_task(shard: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint of a shard's task: the shard's own without its `--shard I/N`."""
    parts = json.loads(json.dumps(shard.get("parts", {})))
    parts.get("args", {}).pop(SHARD_OPTION, None)
    return {"digest": _digest(parts), "parts": parts}


def of_shards(folder: str | Path) -> dict[str, Any] | None:
    """The task fingerprint all finished shards under `folder` agree on; None if they do not (or record none),
    and the merge then refuses them (common.shards.shard_folders)."""
    found = {}
    for marker in sorted(Path(folder).glob(f"*/{SUCCESS}")):
        try:
            shard = json.loads(marker.read_text()).get("fingerprint")
        except (OSError, ValueError):
            return None
        if not shard:
            return None
        task = of_task(shard)
        found[task["digest"]] = task
    return next(iter(found.values())) if len(found) == 1 else None


def profile_values(step: str, profile: dict[str, Any], options: dict[str, list[str]]) -> dict[str, Any]:
    """The values of the keys the step reads (a missing key raises the profile's own clear error)."""
    keys = STEPS[step].profile_reads if step in STEPS else None
    if keys is None:
        return json.loads(json.dumps(profile))
    values = {}
    for template in keys:
        key = re.sub(r"\{(--[\w-]+)\}", lambda m: (options.get(m[1]) or ["?"])[0], template)
        value: Any = profile
        for part in key.split("."):
            value = value[part]
        values[key] = json.loads(json.dumps(value))
    return values


def explain(recorded: dict[str, Any] | None, current: dict[str, Any]) -> str | None:
    """None when the fingerprints agree, else a short reason naming what changed."""
    if not recorded or "digest" not in recorded:
        return "no fingerprint recorded"
    if recorded["digest"] == current["digest"]:
        return None
    old, new = recorded.get("parts", {}), current["parts"]
    changed: list[str] = []
    if old.get("version") != new["version"]:
        changed.append(f"version {old.get('version')} -> {new['version']}")
    for part, label in (("args", "argument"), ("inputs", "input")):
        a, b = old.get(part, {}), new[part]
        changed += [f"{label} {key}" for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
    changed += [f"profile {key}" for key in _differing_keys(old.get("profile", {}), new["profile"])]
    if not changed:
        changed.append("step")
    shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
    return f"changed: {shown}"


def recorded(folder: str | Path) -> dict[str, Any] | None:
    """The fingerprint a finished step folder recorded, or None (unfinished, or written before fingerprints)."""
    try:
        return json.loads((Path(folder) / SUCCESS).read_text()).get("fingerprint")
    except (OSError, ValueError):
        return None


def _differing_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [k for key in keys for k in _differing_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [prefix.rstrip(".")] if old != new else []


def _describe(value: str, out: str | None) -> str | dict[str, Any]:
    """A path's content identity, or the value itself when it is not a local path."""
    if value.startswith("s3://") or not value:
        return value
    path = Path(value).absolute()
    try:
        exists = path.exists()
    except OSError:
        return value
    if not exists:
        return value
    marked = _marked_ancestor(path)
    if marked is not None:
        return {"step_folder": _file_hash(marked / SUCCESS), "path": path.relative_to(marked).as_posix()}
    if path.is_file():
        return {"file": _file_identity(path)}
    step_folders = _step_folders(path, out)
    if step_folders:
        return {"work_folder": step_folders}
    return {"folder": _tree_identity(path)}


def _marked_ancestor(path: Path) -> Path | None:
    for folder in (path, *path.parents) if path.is_dir() else path.parents:
        if _has_marker(folder):
            return folder
    return None


def _has_marker(folder: Path) -> bool:
    """Unreadable folders count as unmarked: the step itself reports them (a rejected.csv row)."""
    try:
        return (folder / SUCCESS).is_file()
    except OSError:
        return False


def _step_folders(path: Path, out: str | None) -> dict[str, str]:
    """Marker hashes of the finished step folders directly inside a work folder (the step's own excluded)."""
    own = Path(out).absolute() if out else None
    found = {}
    for child in sorted(path.iterdir()):
        if child.name.startswith(".") or child.absolute() == own or not _has_marker(child):
            continue
        found[child.name] = _file_hash(child / SUCCESS)
    return found


def _file_identity(path: Path) -> str:
    stat = path.stat()
    if stat.st_size <= HASHED_FILE_BYTES:
        return _file_hash(path)
    return f"size {stat.st_size} mtime_ns {stat.st_mtime_ns}"


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def _tree_identity(root: Path) -> str:
    """Size and mtime of every file below `root` (not their content: a hospital folder is large)."""
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder, name)
            try:
                stat = path.stat()
                entry = f"{path.relative_to(root).as_posix()!r} {stat.st_size} {stat.st_mtime_ns}\n"
            except OSError as error:
                entry = f"{path.relative_to(root).as_posix()!r} unreadable {type(error).__name__}\n"
            digest.update(entry.encode("utf-8", "surrogateescape"))
    return "sha256:" + digest.hexdigest()


def _digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
