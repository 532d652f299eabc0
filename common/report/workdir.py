"""Reading a pipeline work directory (layout in docs/contracts.md) for the report.

A folder counts only when its step finished (`_SUCCESS.json`); anything else is recorded as missing
with the reason, so the report can state what it could not show instead of showing something made up.
Only infer-ab-hospital - the out-of-domain baseline every comparison refers to - is required.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from common.artifacts import SUCCESS, UnusableInput, error_line
from common.constants import DOMAINS

REQUIRED_PART = "infer-ab-hospital"
METRIC_FIELDS = (
    "level", "split", "n", "n_pos", "auc", "auc_ci95", "threshold", "threshold_source",
    "sensitivity", "specificity", "accuracy",
)  # fmt: skip
# Every folder the report looks for, in the order the pipeline produces them.
PARTS = (
    *(f"synth-{d}" for d in DOMAINS),
    *(f"preprocess-{d}" for d in DOMAINS),
    *(f"split-{d}" for d in DOMAINS),
    "pretrain-a",
    "pretrain-ab",
    *(f"infer-{m}-{d}" for m in ("a", "ab") for d in DOMAINS),
    *(f"finetune{c}-stage{s}" for c in (1, 2) for s in (1, 2)),
    "radiomics",
)


@dataclass
class WorkDir:
    root: Path
    missing: dict[str, str] = field(default_factory=dict)
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict)

    @classmethod
    def open(cls, root: str | Path) -> WorkDir:
        workdir = cls(Path(root))
        if not workdir.root.is_dir():
            raise UnusableInput(f"work directory {root} does not exist")
        if not workdir.done(REQUIRED_PART):
            raise UnusableInput(f"{workdir.root / REQUIRED_PART} is required: {workdir.status(REQUIRED_PART)}")
        if workdir.metrics(REQUIRED_PART) is None or workdir.scores(REQUIRED_PART) is None:
            raise UnusableInput(f"{REQUIRED_PART} is required: {workdir.missing[REQUIRED_PART]}")
        return workdir

    def path(self, part: str) -> Path:
        return self.root / part

    def done(self, part: str) -> bool:
        return (self.path(part) / SUCCESS).is_file()

    def status(self, part: str) -> str:
        if self.done(part):
            return "ok"
        if self.path(part).is_dir():
            return f"incomplete ({SUCCESS} absent: the step did not finish)"
        return "not in the work directory"

    def marker(self, part: str) -> dict[str, Any] | None:
        return self._read(part, SUCCESS, lambda p: json.loads(p.read_text()))

    def metrics(self, part: str) -> dict[str, Any] | None:
        metrics = self._read(part, "metrics.json", lambda p: json.loads(p.read_text()))
        if metrics is not None:
            absent = [name for name in METRIC_FIELDS if name not in metrics]
            if absent:
                self.missing[part] = f"metrics.json lacks {', '.join(absent)}"
                return None
        return metrics

    def scores(self, part: str) -> pd.DataFrame | None:
        frame = self._read(part, "scores.csv", lambda p: pd.read_csv(p, dtype={"patient_id": str, "image_id": str}))
        needed = {"patient_id", "split", "label", "score"}
        if frame is not None and not needed <= set(frame.columns):
            self.missing[part] = f"scores.csv lacks {', '.join(sorted(needed - set(frame.columns)))}"
            return None
        return frame

    def history(self, part: str) -> pd.DataFrame | None:
        frame = self._read(part, "history.csv", pd.read_csv)
        if frame is not None and not {"loss", "val_loss"} <= set(frame.columns):
            self.missing[part] = "history.csv lacks loss/val_loss"
            return None
        return frame

    def table(self, part: str, name: str) -> pd.DataFrame | None:
        return self._read(part, name, lambda p: pd.read_csv(p, dtype={"patient_id": str, "image_id": str}))

    def data_source(self) -> str:
        """Synthetic when the pipeline generated its cohorts, real otherwise.

        Evidence: a synth-* folder, or a preprocess step whose recorded input lies in one (on Argo the
        synth folders are not mounted for the report, but preprocess recorded where it read from).
        """
        if any(self.path(f"synth-{d}").is_dir() for d in DOMAINS):
            return "synthetic"
        for domain in DOMAINS:
            inputs = (self.marker(f"preprocess-{domain}") or {}).get("inputs", {})
            if any("synth-" in str(value) for value in inputs.values()):
                return "synthetic"
        return "real"

    def parts(self) -> list[tuple[str, str]]:
        """(folder, status) of every part; synth-* only for synthetic runs (real data has none by design)."""
        real = self.data_source() == "real"
        return [(part, self.missing.get(part, self.status(part))) for part in PARTS
                if not (real and part.startswith("synth-"))]  # fmt: skip

    def note_missing(self, part: str, reason: str) -> None:
        self.missing.setdefault(part, reason)

    def _read(self, part: str, name: str, reader) -> Any:
        key = (part, name)
        if key not in self._cache:
            self._cache[key] = None
            if not self.done(part):
                self.note_missing(part, self.status(part))
            elif not (self.path(part) / name).is_file():
                self.note_missing(part, f"{name} absent")
            else:
                try:
                    self._cache[key] = reader(self.path(part) / name)
                except (OSError, ValueError, pd.errors.ParserError) as error:
                    self.note_missing(part, f"{name} unreadable: {error_line(error)}")
        return self._cache[key]
