"""Scheduled retraining on new hospital data: one run of the CronWorkflow (`mammo retrain`).

A run finds the studies that arrived under the hospital's S3 prefix (one folder per study) since the last
successful run, stops early when there are none or too few, preprocesses them and adds them to the training
data, re-splits with the previous split locked (existing patients never change subset, so the test set stays
the one earlier models were judged on), fine-tunes a challenger from the current champion, scores both
models on the same test images and lets the champion/challenger gate (common.registry) decide.

State lives in S3 under the state prefix, and `state.json` is written last: a run that dies part-way leaves
the previous state in force and the next run sees the same studies as new again.
  state.json                        ingested study ids, where the current training data is, last success
  data/<run_id>/preprocess-hospital/ and data/<run_id>/split-hospital/   the training data after a run
  runs/<run_id>/                    decision.json of each run (the step's --out)

The steps run as `mammo` subprocesses (the same command lines as in the pipeline), through a runner that
tests can replace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from common import telemetry
from common.artifacts import SUCCESS, UnusableInput, atomic_write_csv, atomic_write_json, require_success, step_output
from common.registry import Champion, GateResult, ModelRegistry, champion_challenger_gate
from common.storage import S3Uri, Storage

StepRunner = Callable[[str, list[str]], None]
STATE = "state.json"


def subprocess_runner(task: str, argv: list[str]) -> None:
    """Run `mammo <argv>` as a child process; its metrics are grouped under task `retrain-<task>`."""
    env = {**os.environ, "MAMMO_TASK": f"retrain-{task}"}
    result = subprocess.run([sys.executable, "-m", "jobs.cli", *argv], env=env)
    if result.returncode != 0:
        raise UnusableInput(f"retraining step {task} (mammo {argv[0]}) failed with exit code {result.returncode}")


@dataclass
class RetrainState:
    ingested: list[str] = field(default_factory=list)
    images: str | None = None  # s3:// of the current preprocess folder
    split: str | None = None  # s3:// of the current split folder
    last_success_unixtime: float | None = None
    last_run: str | None = None

    @classmethod
    def load(cls, storage: Storage, prefix: S3Uri) -> RetrainState:
        found = storage.get_with_etag(prefix.join(STATE))
        return cls(**json.loads(found[0])) if found else cls()

    def save(self, storage: Storage, prefix: S3Uri) -> None:
        storage.put_bytes(prefix.join(STATE), (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode())


@dataclass(frozen=True)
class RetrainSettings:
    hospital: S3Uri
    cohort: S3Uri
    registry: S3Uri
    state: S3Uri
    work: Path
    profile: str
    min_new_studies: int = 20
    margin: float = 0.02
    alpha: float = 0.05
    config: int = 2


@dataclass
class Decision:
    run_id: str
    decision: str  # one of telemetry.RETRAIN_DECISIONS
    new_studies: list[str]
    champion: str | None = None
    challenger: str | None = None
    gate: dict[str, Any] | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_studies(storage: Storage, hospital: S3Uri, ingested: Sequence[str]) -> list[str]:
    """Study folders under the hospital prefix that no successful run has ingested yet."""
    seen = set(ingested)
    return sorted(study for study in storage.list_folders(hospital) if study not in seen)


def locked_split_violations(previous: pd.DataFrame, current: pd.DataFrame) -> list[str]:
    """Patients of the earlier split that are missing or in another subset now (must be none)."""
    now = dict(zip(current["patient_id"].astype(str), current["split"], strict=True))
    return [f"{pid}: {subset} -> {now.get(pid, 'missing')}"
            for pid, subset in zip(previous["patient_id"].astype(str), previous["split"], strict=True)
            if now.get(pid) != subset]


def paired_test_scores(champion: pd.DataFrame, challenger: pd.DataFrame) -> pd.DataFrame:
    """Both models' scores on the same test images (inner join on image_id; labels must agree)."""
    a = champion[champion["split"] == "test"][["image_id", "label", "score"]]
    b = challenger[challenger["split"] == "test"][["image_id", "label", "score"]]
    joined = a.merge(b, on="image_id", suffixes=("_champion", "_challenger"), validate="one_to_one")
    if not (joined["label_champion"] == joined["label_challenger"]).all():
        raise UnusableInput("champion and challenger scores disagree on test labels: they scored different data")
    if len(joined) != len(a) or len(joined) != len(b):
        raise UnusableInput(f"champion scored {len(a)} test images, challenger {len(b)}, only {len(joined)} shared")
    return joined.rename(columns={"label_champion": "label"}).drop(columns="label_challenger")


def merge_step_folders(folders: Sequence[Path], out: Path, key: str = "image_id") -> int:
    """Union of preprocess folders: files copied (later folders win), CSV tables concatenated, deduplicated."""
    with step_output("retrain-merge", out, {f"part{i}": str(f) for i, f in enumerate(folders)}) as record:
        tables: dict[str, list[pd.DataFrame]] = {}
        for folder in folders:
            require_success(folder)
            for path in sorted(folder.rglob("*")):
                if not path.is_file() or path.name == SUCCESS:
                    continue
                relative = path.relative_to(folder)
                if path.suffix == ".csv" and len(relative.parts) == 1:
                    tables.setdefault(path.name, []).append(pd.read_csv(path, dtype=str, keep_default_na=False))
                else:
                    target = out / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target)
        for name, frames in tables.items():
            table = pd.concat(frames, ignore_index=True)
            if key in table.columns:
                table = table.drop_duplicates(subset=key, keep="last")
            atomic_write_csv(out / name, table)
        rows = len(pd.read_csv(out / "images.csv")) if (out / "images.csv").is_file() else 0
        record.counts["images"] = rows
    return rows


class RetrainRun:
    def __init__(self, settings: RetrainSettings, storage: Storage, runner: StepRunner = subprocess_runner,
                 run_id: str | None = None):
        self.s = settings
        self.storage = storage
        self.runner = runner
        self.registry = ModelRegistry(settings.registry, storage)
        self.run_id = run_id or f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"
        self.work = settings.work / self.run_id

    def step(self, task: str, *argv: str) -> Path:
        """Run one pipeline step writing `work/<task>`; returns that folder."""
        out = self.work / task
        self.runner(task, [*argv, "--out", str(out), "--profile", self.s.profile])
        require_success(out)
        return out

    def execute(self, seed_champion: Path | None = None) -> Decision:
        state = RetrainState.load(self.storage, self.s.state)
        found = new_studies(self.storage, self.s.hospital, state.ingested)
        if len(found) < max(1, self.s.min_new_studies):
            kind = "skipped_none" if not found else "skipped_too_few"
            reason = (f"{len(found)} new studies under {self.s.hospital}; at least {self.s.min_new_studies} "
                      "are needed to retrain")
            state.last_run = self.run_id
            state.save(self.storage, self.s.state)
            return Decision(self.run_id, kind, found, reason=reason)

        champion = self.registry.champion()
        if champion is None:
            champion = self._seed(seed_champion)
        self.work.mkdir(parents=True, exist_ok=True)
        images, split = self._training_data(state, found)
        champion_dir = self.registry.fetch(champion.model_id, self.work / "champion")

        stage1 = self.step("challenger-stage1", "finetune-stage1", "--model", str(champion_dir), "--images",
                           str(images), "--split", str(split), "--config", str(self.s.config))
        challenger_dir = self.step("challenger", "finetune-stage2", "--model", str(stage1), "--images", str(images),
                                   "--split", str(split))
        scored = {}
        for name, model in (("champion", champion_dir), ("challenger", challenger_dir)):
            folder = self.step(f"score-{name}", "baseline-infer", "--model", str(model), "--images", str(images),
                               "--split", str(split), "--splits", "test")
            scored[name] = pd.read_csv(folder / "scores.csv", dtype={"image_id": str})
        paired = paired_test_scores(scored["champion"], scored["challenger"])
        gate = champion_challenger_gate(paired["label"], paired["score_champion"], paired["score_challenger"],
                                        self.s.margin, self.s.alpha)
        challenger_id = self.registry.register(
            challenger_dir, metrics={"gate": gate.as_dict()}, lineage=self._lineage(champion, found, gate))
        if gate.promote:
            self.registry.promote(challenger_id, champion, gate.reason)

        # The training data and the state move forward whatever the gate said: the studies are ingested.
        data = self.s.state.join("data", self.run_id)
        self.storage.publish_dir(images, data.join("preprocess-hospital"))
        self.storage.publish_dir(split, data.join("split-hospital"))
        state.ingested = sorted(set(state.ingested) | set(found))
        state.images, state.split = str(data.join("preprocess-hospital")), str(data.join("split-hospital"))
        state.last_success_unixtime, state.last_run = time.time(), self.run_id
        state.save(self.storage, self.s.state)
        return Decision(self.run_id, "promoted" if gate.promote else "rejected", found, champion.model_id,
                        challenger_id, gate.as_dict(), gate.reason)

    def _seed(self, seed_champion: Path | None) -> Champion:
        if seed_champion is None:
            raise UnusableInput(f"the registry {self.s.registry} has no champion: give --seed-champion MODEL_DIR "
                                "(a model folder, e.g. a finetune-stage2 output) for the first run")
        model_id = self.registry.register(seed_champion, metrics={}, lineage={"source": "seed",
                                                                              "seeded_from": str(seed_champion)})
        self.registry.promote(model_id, None, "seed champion")
        champion = self.registry.champion()
        assert champion is not None and champion.model_id == model_id
        return champion

    def _training_data(self, state: RetrainState, found: list[str]) -> tuple[Path, Path]:
        """Preprocess the new studies, merge them with the current data and re-split with the old split locked."""
        incoming = self.work / "incoming"
        for study in found:
            self.storage.download_dir(self.s.hospital.join(study), incoming / "dicom" / study)
        cohort_file = self.storage.download(self.s.cohort, incoming)
        fresh = self.step("preprocess-new", "preprocess", "--input", str(incoming / "dicom"), "--cohort",
                          str(cohort_file))
        parts = [fresh]
        previous_split = None
        if state.images and state.split:
            parts.insert(0, self.storage.download(S3Uri.parse(state.images), self.work / "previous-images"))
            previous_split = self.storage.download(S3Uri.parse(state.split), self.work / "previous-split")
        images = self.work / "preprocess-hospital"
        merge_step_folders(parts, images)

        cohort = pd.read_csv(cohort_file, dtype=str, keep_default_na=False)
        present = set(pd.read_csv(images / "images.csv", dtype=str)["patient_id"])
        atomic_write_csv(self.work / "cohort.csv", cohort[cohort["patient_id"].isin(present)])
        argv = ["split", "--cohort", str(self.work / "cohort.csv")]
        if previous_split is not None:
            argv += ["--previous", str(previous_split / "split.csv")]
        split = self.step("split-hospital", *argv)
        if previous_split is not None:
            moved = locked_split_violations(pd.read_csv(previous_split / "split.csv", dtype=str),
                                            pd.read_csv(split / "split.csv", dtype=str))
            if moved:
                raise UnusableInput(f"the locked split changed for {len(moved)} patients, e.g. {moved[0]}")
        return images, split

    def _lineage(self, champion: Champion, found: list[str], gate: GateResult) -> dict[str, Any]:
        return {
            "parent": champion.model_id,
            "run_id": self.run_id,
            "new_studies": found,
            "hospital": str(self.s.hospital),
            "training_data": str(self.s.state.join("data", self.run_id)),
            "finetune_config": self.s.config,
            "profile": self.s.profile,
            "promoted": gate.promote,
        }


def record_decision(decision: Decision, out: Path) -> None:
    """The run's record (the step's output folder) and the decision metrics."""
    with step_output("retrain", out, {"run_id": decision.run_id}) as record:
        atomic_write_json(out / "decision.json", decision.as_dict())
        record.counts["new_studies"] = len(decision.new_studies)
        record.extra["decision"] = decision.decision
    gate = decision.gate or {}
    telemetry.push_retrain_decision(decision.decision, len(decision.new_studies), gate.get("champion_auc"),
                                    gate.get("challenger_auc"), gate.get("p_value"))
