"""Scheduled retraining on new hospital data: the steps of the retraining DAG (common.retrain_dag).

A run finds the studies that arrived under the hospital's S3 prefix (one folder per study) since the last
successful run, stops early when there are none or too few (`discover`), preprocesses them and adds them to the
training data (`training_data`), re-splits with the previous split locked (existing patients never change
subset, so the test set stays the one earlier models were judged on), fine-tunes a challenger from the current
champion, scores both models on the same test images and lets the champion/challenger gate (common.registry)
decide (`gate`). On Argo each is its own pod (the CronWorkflow); `mammo retrain` runs the same task list locally
through the local runner (`RetrainRun`), skipping what a stopped or failed run with the same run id finished.

State lives in S3 under the state prefix, and `state.json` is written last: a run that dies part-way leaves
the previous state in force and the next run sees the same studies as new again.
  state.json                        ingested study ids, where the current training data is, last success
  data/<run_id>/preprocess-hospital/ and data/<run_id>/split-hospital/   the training data after a run
  runs/<run_id>/                    decision.json of each run (the step's --out)
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from common import telemetry
from common.artifacts import SUCCESS, UnusableInput, atomic_write_csv, atomic_write_json, require_success, step_output
from common.constants import RETRAIN
from common.metrics import PairedScores, paired_test_scores
from common.registry import Champion, ModelRegistry, champion_challenger_gate
from common.storage import S3Uri, Storage

if TYPE_CHECKING:
    from common.runner import Execute

STATE = "state.json"


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
    min_new_studies: int = RETRAIN.min_new_studies
    margin: float = RETRAIN.margin
    alpha: float = RETRAIN.alpha
    config: int = RETRAIN.finetune_config


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


def locked_test_pairs(champion: pd.DataFrame, challenger: pd.DataFrame) -> PairedScores:
    """Both models' scores on the same test images; a champion is judged on the whole locked test set, so any
    image the two did not both score (or scored with different labels) refuses the gate."""
    paired = paired_test_scores(champion, challenger, level="image")
    if paired.conflicting:
        raise UnusableInput("champion and challenger scores disagree on test labels: they scored different data")
    if paired.unshared:
        raise UnusableInput(f"champion scored {paired.n_a} test images, challenger {paired.n_b}, only "
                            f"{paired.shared} shared")
    return paired


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


def discover(settings: RetrainSettings, storage: Storage, run_id: str, seed_champion: str | None,
             out: Path) -> dict[str, Any]:
    """The DAG's first step: new studies, the champion and the current training data, downloaded into `out`.

    Too few new studies: the run's decision (a skip) is recorded and `proceed` is false, so every later task is
    skipped. A first run registers `seed_champion` (a local folder or an s3:// model folder) as the champion.
    """
    registry = ModelRegistry(settings.registry, storage)
    state = RetrainState.load(storage, settings.state)
    found = new_studies(storage, settings.hospital, state.ingested)
    discovery: dict[str, Any] = {"run_id": run_id, "new_studies": found, "proceed": False,
                                 **{k: str(getattr(settings, k)) for k in ("hospital", "cohort", "registry", "state")}}
    if len(found) < max(1, settings.min_new_studies):
        kind = "skipped_none" if not found else "skipped_too_few"
        reason = (f"{len(found)} new studies under {settings.hospital}; at least {settings.min_new_studies} "
                  "are needed to retrain")
        state.last_run = run_id
        state.save(storage, settings.state)
        discovery["decision"] = Decision(run_id, kind, found, reason=reason).as_dict()
        return discovery
    champion = registry.champion()
    if champion is None:
        champion = _seed(registry, storage, settings, seed_champion, out / "seed")
    for study in found:
        storage.download_dir(settings.hospital.join(study), out / "dicom" / study)
    shutil.copyfile(storage.download(settings.cohort, out / "incoming"), out / "cohort.csv")
    split = out / "previous" / "split" / "split.csv"
    if state.images and state.split:
        storage.download(S3Uri.parse(state.images), out / "previous" / "images")
        storage.download(S3Uri.parse(state.split), split.parent)
    else:  # the first run: nothing is locked yet
        atomic_write_csv(split, pd.DataFrame(columns=["patient_id", "split"]))
    registry.fetch(champion.model_id, out / "champion")
    discovery.update(proceed=True, champion={"model_id": champion.model_id, "etag": champion.etag,
                                             "record": champion.record})
    return discovery


def _seed(registry: ModelRegistry, storage: Storage, settings: RetrainSettings, seed: str | None,
          scratch: Path) -> Champion:
    if not seed:
        raise UnusableInput(f"the registry {settings.registry} has no champion: give --seed-champion MODEL_DIR "
                            "(a model folder, e.g. a finetune-stage2 output) for the first run")
    folder = storage.download(S3Uri.parse(seed), scratch) if str(seed).startswith("s3://") else Path(seed)
    model_id = registry.register(folder, metrics={}, lineage={"source": "seed", "seeded_from": str(seed)})
    registry.promote(model_id, None, "seed champion")
    champion = registry.champion()
    assert champion is not None and champion.model_id == model_id
    return champion


def training_data(discovery_dir: Path, new_images: Path, out: Path) -> int:
    """Previous training data + the preprocessed new studies, and the cohort restricted to patients with images."""
    previous = discovery_dir / "previous" / "images"
    parts = [previous, new_images] if (previous / SUCCESS).is_file() else [new_images]
    rows = merge_step_folders(parts, out)
    cohort = pd.read_csv(discovery_dir / "cohort.csv", dtype=str, keep_default_na=False)
    present = set(pd.read_csv(out / "images.csv", dtype=str)["patient_id"])
    atomic_write_csv(out / "cohort.csv", cohort[cohort["patient_id"].isin(present)])
    return rows


@dataclass(frozen=True)
class GateInputs:
    discovery: Path
    images: Path
    split: Path
    challenger: Path
    champion_scores: Path
    challenger_scores: Path
    margin: float
    alpha: float
    config: int
    profile: str


def gate(inputs: GateInputs, storage: Storage) -> Decision:
    """Locked-split check, champion/challenger gate, registration, promotion (compare-and-swap), new state.

    The state moves forward whatever the gate said (the studies are ingested); `state.json` is written last.
    """
    discovery = json.loads((inputs.discovery / DISCOVERY).read_text())
    run_id, found = discovery["run_id"], discovery["new_studies"]
    registry = ModelRegistry(S3Uri.parse(discovery["registry"]), storage)
    state_prefix = S3Uri.parse(discovery["state"])
    previous = pd.read_csv(inputs.discovery / "previous" / "split" / "split.csv", dtype=str)
    moved = locked_split_violations(previous, pd.read_csv(inputs.split / "split.csv", dtype=str))
    if moved:
        raise UnusableInput(f"the locked split changed for {len(moved)} patients, e.g. {moved[0]}")
    champion = Champion(**discovery["champion"])
    scored = {name: pd.read_csv(folder / "scores.csv", dtype={"image_id": str})
              for name, folder in (("champion", inputs.champion_scores), ("challenger", inputs.challenger_scores))}
    paired = locked_test_pairs(scored["champion"], scored["challenger"])
    result = champion_challenger_gate(paired.labels, paired.scores_a, paired.scores_b, inputs.margin, inputs.alpha)
    lineage = {"parent": champion.model_id, "run_id": run_id, "new_studies": found,
               "hospital": discovery["hospital"], "training_data": str(state_prefix.join("data", run_id)),
               "finetune_config": inputs.config, "profile": inputs.profile, "promoted": result.promote}
    challenger_id = registry.register(inputs.challenger, metrics={"gate": result.as_dict()}, lineage=lineage)
    if result.promote:
        registry.promote(challenger_id, champion, result.reason)

    state = RetrainState.load(storage, state_prefix)
    data = state_prefix.join("data", run_id)
    storage.publish_dir(inputs.images, data.join("preprocess-hospital"))
    storage.publish_dir(inputs.split, data.join("split-hospital"))
    state.ingested = sorted(set(state.ingested) | set(found))
    state.images, state.split = str(data.join("preprocess-hospital")), str(data.join("split-hospital"))
    state.last_success_unixtime, state.last_run = time.time(), run_id
    state.save(storage, state_prefix)
    return Decision(run_id, "promoted" if result.promote else "rejected", found, champion.model_id,
                    challenger_id, result.as_dict(), result.reason)


class RetrainRun:
    """`mammo retrain` on one machine: the retraining DAG (common.retrain_dag) run by the local runner in the run's
    work folder, with the rule of `mammo pipeline run`: a task whose folder holds its current fingerprint is skipped,
    so the same run id again resumes a run that stopped or failed part-way.

    `execute` runs one task (default: the runner's child process; tests replace the model steps)."""

    def __init__(self, settings: RetrainSettings, storage: Storage, execute: Execute | None = None,
                 run_id: str | None = None, echo: Callable[[str], None] = print):
        self.s = settings
        self.storage = storage
        self.execute_task = execute
        self.run_id = run_id or f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"
        self.work = settings.work / self.run_id
        self.echo = echo

    def execute(self, seed_champion: Path | str | None = None) -> Decision:
        """Raises runner.TaskFailed / runner.Stopped (the run's folder keeps what finished)."""
        from common import runner
        from common.retrain_dag import DISCOVER, retrain_tasks

        params = {"hospital": str(self.s.hospital), "cohort": str(self.s.cohort), "registry": str(self.s.registry),
                  "state": str(self.s.state), "run_id": self.run_id, "min_new_studies": str(self.s.min_new_studies),
                  "seed_champion": str(seed_champion or ""), "margin": str(self.s.margin), "alpha": str(self.s.alpha),
                  "finetune_config": str(self.s.config)}
        plan = retrain_tasks(self.s.profile, params)
        # Discover first: on Argo every later task waits for its `proceed` output; here the run ends there.
        runner.run_tasks(plan[:1], self.work, self.echo, execute=self.execute_task)
        discovery = json.loads((self.work / DISCOVER / DISCOVERY).read_text())
        if not discovery["proceed"]:
            return Decision(**discovery["decision"])
        runner.run_tasks(plan[1:], self.work, self.echo, execute=self.execute_task)
        return Decision(**json.loads((self.work / "gate" / "decision.json").read_text()))


DISCOVERY = "discovery.json"


def record_decision(decision: Decision, out: Path) -> None:
    """The run's record (the step's output folder) and the decision metrics."""
    with step_output("retrain", out, {"run_id": decision.run_id}) as record:
        atomic_write_json(out / "decision.json", decision.as_dict())
        record.counts["new_studies"] = len(decision.new_studies)
        record.extra["decision"] = decision.decision
    gate = decision.gate or {}
    telemetry.push_retrain_decision(decision.decision, len(decision.new_studies), gate.get("champion_auc"),
                                    gate.get("challenger_auc"), gate.get("p_value"))
