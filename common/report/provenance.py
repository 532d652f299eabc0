"""Where a report came from: the code's git commit and the exact commands that rebuild it.

A published number must be traceable to code and data. The commit is read from the checkout the package
runs from (`git rev-parse HEAD`, flagged `dirty` when tracked files differ from it); an installed copy
without a checkout (a container image) names the commit given at build time in `MAMMO_GIT_COMMIT`, or
says it is unknown. The pipeline command is rebuilt from what the steps recorded in their `_SUCCESS.json`
(data folders, cohort files, baseline), so the reproduce section never holds a placeholder.
"""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path
from shlex import join, quote
from typing import Any

from common import __version__
from common.report.workdir import WorkDir

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
COMMIT_ENV = "MAMMO_GIT_COMMIT"
# A domain read from a public dataset by `mammo cohort` (pipeline option --film/--ffdm/--target SPEC).
DATASET_OPTIONS = {"film": "--film", "ffdm": "--ffdm", "hospital": "--target"}
# pipeline option -> (folder whose _SUCCESS.json records it, input name there); real-data runs only.
RECORDED_OPTIONS = (
    ("--dicom", "preprocess-hospital", "input"),
    ("--cohort", "preprocess-hospital", "cohort"),
    ("--film-dicom", "preprocess-film", "input"),
    ("--film-cohort", "preprocess-film", "cohort"),
    ("--ffdm-dicom", "preprocess-ffdm", "input"),
    ("--ffdm-cohort", "preprocess-ffdm", "cohort"),
    ("--checkpoint", "infer-ab-hospital", "checkpoint"),
    ("--model", "infer-ab-hospital", "model"),
)


def _git(*args: str) -> str:
    result = subprocess.run(["git", "-C", str(PACKAGE_ROOT), *args], capture_output=True, text=True, timeout=20,
                            check=True)  # fmt: skip
    return result.stdout.strip()


def code_version() -> dict[str, Any]:
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
        source = "git checkout"
    except (OSError, subprocess.SubprocessError):
        commit, dirty = os.environ.get(COMMIT_ENV, "") or "unknown", None
        source = f"${COMMIT_ENV}" if os.environ.get(COMMIT_ENV) else "no git checkout and no $" + COMMIT_ENV
    return {"git_commit": commit, "git_dirty": dirty, "commit_source": source, "package_version": __version__}


def describe(version: dict[str, Any]) -> str:
    dirty = " + uncommitted changes" if version["git_dirty"] else ""
    return f"git commit {version['git_commit']}{dirty} ({version['commit_source']}), mammo {version['package_version']}"


def pipeline_command(workdir: WorkDir, profile: str) -> str:
    """`mammo pipeline run ...` with the inputs the steps recorded (synthetic runs need none)."""
    words = ["mammo", "pipeline", "run", "--profile", profile, "--workdir", str(workdir.root)]
    configs = [str(c) for c in (1, 2) if workdir.path(f"finetune{c}-stage1").is_dir()]
    if configs and configs != ["1", "2"]:
        words += ["--configs", *configs]
    if workdir.data_source() == "real":
        own_model = str(workdir.path("pretrain-ab"))
        from_datasets = set()
        for domain, option in DATASET_OPTIONS.items():
            spec = _dataset_spec((workdir.marker(f"cohort-{domain}") or {}).get("inputs") or {})
            if spec:
                words += [option, spec]
                from_datasets.add(f"preprocess-{domain}")
        for option, part, name in RECORDED_OPTIONS:
            value = ((workdir.marker(part) or {}).get("inputs") or {}).get(name)
            if value and part not in from_datasets and not (option == "--model" and Path(value) == Path(own_model)):
                words += [option, value]
        mean = ((workdir.marker("infer-ab-hospital") or {}).get("preprocessing") or {}).get("featurewise_mean")
        if "--checkpoint" in words and mean is not None:
            words += ["--checkpoint-mean", f"{float(mean):g}"]
    return join(words)


def _dataset_spec(inputs: dict[str, Any]) -> str | None:
    """DATASET:METADATA[,METADATA]:DICOM from a cohort step's recorded inputs (the metadata list is recorded as
    its Python text)."""
    if not {"dataset", "metadata", "dicom"} <= set(inputs):
        return None
    metadata = inputs["metadata"]
    if isinstance(metadata, str):
        try:
            metadata = ast.literal_eval(metadata)
        except (ValueError, SyntaxError):
            metadata = [metadata]
    return f"{inputs['dataset']}:{','.join(str(m) for m in metadata)}:{inputs['dicom']}"


def report_command(workdir: str, out: str, profile: str) -> str:
    return " ".join(["mammo", "report", "--workdir", quote(str(workdir)), "--out", quote(str(out)), "--profile",
                     quote(profile)])  # fmt: skip
