"""Profiles (full, demo, ci) are YAML data shipped with the package, so a run is reproducible from its name.

A loaded profile is a dict whose sections remember where they came from: a key a step needs but the
file lacks raises `ProfileKeyError` naming the key path and the file ("profile mine.yaml has no key
split.seed"), not a bare `KeyError: 'seed'` from deep inside the step.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

PROFILE_NAMES = ("full", "demo", "ci")


class ProfileError(ValueError):
    """A profile that cannot be used (unknown name, unreadable or malformed YAML); the CLI exits 2 with it."""


class ProfileKeyError(ProfileError, KeyError):
    """A key the step needs is missing; still a KeyError, so code that falls back to a default keeps working."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Section(dict):
    """One mapping of a profile; missing keys name their full path and the profile file."""

    def __init__(self, data: dict[str, Any], source: str, path: str = ""):
        super().__init__({key: _wrap(value, source, f"{path}{key}.") for key, value in data.items()})
        self.source = source
        self.path = path

    def __getitem__(self, key: str) -> Any:
        try:
            return super().__getitem__(key)
        except KeyError:
            raise ProfileKeyError(f"profile {self.source} has no key {self.path}{key}") from None

    def __reduce__(self):  # pickles (to worker processes) as itself, with the plain values
        return (Section, (_plain(self), self.source, self.path))


def _wrap(value: Any, source: str, path: str) -> Any:
    return Section(value, source, path) if isinstance(value, dict) else value


def _plain(value: Any) -> Any:
    return {key: _plain(item) for key, item in value.items()} if isinstance(value, dict) else value


yaml.SafeDumper.add_representer(Section, yaml.representer.SafeRepresenter.represent_dict)


def load_profile(name_or_path: str) -> dict[str, Any]:
    """Return the profile as a dict; a path to a YAML file is accepted for custom profiles."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise ProfileError(f"profile file {name_or_path} does not exist")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise ProfileError(f"profile file {name_or_path} cannot be read: {error}") from None
    elif name_or_path in PROFILE_NAMES:
        text = resources.files("common.profiles").joinpath(f"{name_or_path}.yaml").read_text()
    else:
        raise ProfileError(f"unknown profile {name_or_path!r}: use one of {', '.join(PROFILE_NAMES)} or a YAML file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ProfileError(f"profile {name_or_path} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"profile {name_or_path} is not a YAML mapping of sections")
    return Section(data, name_or_path)
