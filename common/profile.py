"""Profiles (full, demo, ci) are YAML data shipped with the package, so a run is reproducible from its name."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

PROFILE_NAMES = ("full", "demo", "ci")


def load_profile(name_or_path: str) -> dict[str, Any]:
    """Return the profile as a plain dict; a path to a YAML file is accepted for custom profiles."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} and path.exists():
        text = path.read_text()
    elif name_or_path in PROFILE_NAMES:
        text = resources.files("common.profiles").joinpath(f"{name_or_path}.yaml").read_text()
    else:
        raise ValueError(f"unknown profile {name_or_path!r}: use one of {', '.join(PROFILE_NAMES)} or a YAML file")
    return yaml.safe_load(text)
