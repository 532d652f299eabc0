"""Scheduled retraining: decisions, S3 state and the registry, against the loopback S3 and Pushgateway.

The model steps are replaced by a small fake with the same command lines and output files whose scores
have a known quality (score = quality * label + noise), so the gate's decision is known in advance; the
orchestration, the S3 state, the locked split check, the registry and the metrics are the real ones.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common import fingerprint, workfolder
from common.artifacts import atomic_write_csv, step_output
from common.retraining import RetrainRun, RetrainSettings, RetrainState, locked_split_violations, record_decision
from common.runner import TaskFailed
from common.storage import S3Uri, Storage
from jobs.cli import main


def _hash(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


class FakeSteps:
    """The runner's executor: stands in for `mammo preprocess|split|finetune-stage1|finetune-stage2|baseline-infer`
    (writing the fingerprint the CLI would), runs the retraining steps' own CLI in this process; `fail` names tasks
    that exit 1 instead."""

    def __init__(self, challenger_quality: float, keep_previous_split: bool = True, fail: tuple[str, ...] = ()):
        self.challenger_quality = challenger_quality
        self.keep_previous_split = keep_previous_split
        self.fail = fail
        self.calls: list[str] = []

    def __call__(self, task, argv: list[str]) -> int:
        self.calls.append(task.name)
        if task.name in self.fail:
            return 1
        if argv[0].startswith("retrain-"):
            return main(argv)
        step, options = argv[0], dict(zip(argv[1::2], argv[2::2], strict=False))
        with workfolder.step_folder(options["--out"], fingerprint.of_argv(argv)) as out, step_output(step, out, {}):
            getattr(self, step.replace("-", "_"))(options, out)
        return 0

    def preprocess(self, o, out: Path) -> None:
        cohort = pd.read_csv(o["--cohort"], dtype=str).set_index("patient_id")
        rows = []
        for path in sorted(Path(o["--input"]).rglob("*.dcm")):
            patient, side, view = path.stem.split("_")
            image_id = f"{patient}_{side}_{view}"
            (out / "images").mkdir(exist_ok=True)
            (out / "images" / f"{image_id}.png").write_bytes(path.read_bytes())
            rows.append({"image_id": image_id, "patient_id": patient, "laterality": side, "view": view,
                         "label": cohort.loc[patient, "label"]})
        atomic_write_csv(out / "images.csv", pd.DataFrame(rows))

    def split(self, o, out: Path) -> None:
        cohort = pd.read_csv(o["--cohort"], dtype=str)
        previous = {}
        if "--previous" in o and self.keep_previous_split:
            frame = pd.read_csv(o["--previous"], dtype=str)
            previous = dict(zip(frame["patient_id"], frame["split"], strict=True))
        salt = "" if self.keep_previous_split else "reshuffled"
        subsets = ["test", "validation", "train", "train", "train"]
        split = [previous.get(pid, subsets[_hash(salt + pid) % 5]) for pid in cohort["patient_id"]]
        atomic_write_csv(out / "split.csv", cohort.assign(split=split))

    def finetune_stage1(self, o, out: Path) -> None:
        (out / "model.keras").write_text(json.dumps({"quality": self.challenger_quality}))

    def finetune_stage2(self, o, out: Path) -> None:
        (out / "model.keras").write_text((Path(o["--model"]) / "model.keras").read_text())

    def baseline_infer(self, o, out: Path) -> None:
        quality = json.loads((Path(o["--model"]) / "model.keras").read_text())["quality"]
        images = pd.read_csv(Path(o["--images"]) / "images.csv", dtype=str)
        split = pd.read_csv(Path(o["--split"]) / "split.csv", dtype=str)[["patient_id", "split"]]
        frame = images.merge(split, on="patient_id")
        frame = frame[frame["split"].isin(["validation", "test"])].copy()
        frame["label"] = frame["label"].astype(int)
        noise = [np.random.default_rng(_hash(f"{i}{quality}")).standard_normal() for i in frame["image_id"]]
        frame["score"] = quality * frame["label"] + np.array(noise)
        atomic_write_csv(out / "scores.csv", frame[["image_id", "patient_id", "split", "label", "score"]])


def add_studies(client, bucket: str, first: int, count: int) -> None:
    """Studies P<nnn> (one folder each, four views) and the cohort.csv listing every study so far."""
    for n in range(first, first + count):
        for side in "LR":
            for view in ("CC", "MLO"):
                client.put_object(Bucket=bucket, Key=f"hospital/incoming/P{n:03d}/P{n:03d}_{side}_{view}.dcm",
                                  Body=f"pixels of P{n:03d} {side} {view}".encode())
    patients = [f"P{n:03d}" for n in range(first + count)]
    cohort = pd.DataFrame({"patient_id": patients, "age": 55, "label": [n % 2 for n in range(len(patients))]})
    client.put_object(Bucket=bucket, Key="hospital/cohort.csv", Body=cohort.to_csv(index=False).encode())


@pytest.fixture
def retrain(s3_server, s3_env, bucket, tmp_path):
    def make(steps: FakeSteps, min_new: int = 5, run_id: str | None = None) -> RetrainRun:
        settings = RetrainSettings(
            hospital=S3Uri(bucket, "hospital/incoming/"), cohort=S3Uri(bucket, "hospital/cohort.csv"),
            registry=S3Uri(bucket, "models/"), state=S3Uri(bucket, "retrain/"), work=tmp_path / "work",
            profile="ci", min_new_studies=min_new, margin=0.02)
        return RetrainRun(settings, Storage(), execute=steps, run_id=run_id)

    return make


@pytest.fixture
def seed_model(tmp_path) -> Path:
    folder = tmp_path / "seed"
    with step_output("finetune-stage2", folder, {}):
        (folder / "model.keras").write_text(json.dumps({"quality": 1.0}))
    return folder


def test_no_new_studies_skips_and_records_the_decision(retrain, s3_server, bucket, tmp_path, pushgateway,
                                                        pipeline_id, monkeypatch):
    monkeypatch.setenv("PUSHGATEWAY_URL", pushgateway.url)
    monkeypatch.setenv("PIPELINE_ID", pipeline_id)
    steps = FakeSteps(challenger_quality=3.0)
    decision = retrain(steps, run_id="run-0").execute()
    assert decision.decision == "skipped_none" and steps.calls == ["discover"]
    record_decision(decision, tmp_path / "record")
    assert json.loads((tmp_path / "record" / "decision.json").read_text())["decision"] == "skipped_none"
    assert pushgateway.samples("mammo_retrain_decision", job="mammo_retrain", pipeline=pipeline_id,
                               decision="skipped_none") == [1.0]
    state = RetrainState.load(Storage(), S3Uri(bucket, "retrain/"))
    assert state.last_run == "run-0" and state.ingested == [] and state.last_success_unixtime is None


def test_too_few_new_studies_stop_early(retrain, s3_server, bucket):
    add_studies(s3_server.client(), bucket, 0, 3)
    steps = FakeSteps(challenger_quality=3.0)
    decision = retrain(steps, min_new=5).execute()
    assert decision.decision == "skipped_too_few" and decision.new_studies == ["P000", "P001", "P002"]
    assert steps.calls == ["discover"] and RetrainState.load(Storage(), S3Uri(bucket, "retrain/")).ingested == []


def test_first_run_needs_a_champion(retrain, s3_server, bucket, capfd):
    add_studies(s3_server.client(), bucket, 0, 6)
    with pytest.raises(TaskFailed, match="task discover failed with exit code 2"):
        retrain(FakeSteps(3.0)).execute()
    assert "no champion: give --seed-champion" in capfd.readouterr().err


def test_better_challenger_is_promoted_then_a_worse_one_is_not(retrain, s3_server, bucket, seed_model,
                                                               pushgateway, pipeline_id, monkeypatch, tmp_path):
    monkeypatch.setenv("PUSHGATEWAY_URL", pushgateway.url)
    monkeypatch.setenv("PIPELINE_ID", pipeline_id)
    client, storage = s3_server.client(), Storage()
    add_studies(client, bucket, 0, 40)

    better = retrain(FakeSteps(challenger_quality=4.0), run_id="run-1").execute(seed_model)
    assert better.decision == "promoted", better.reason
    assert better.gate["challenger_auc"] > better.gate["champion_auc"] + 0.1
    record_decision(better, tmp_path / "record-1")
    champion = json.loads(client.get_object(Bucket=bucket, Key="models/champion.json")["Body"].read())
    assert champion["model_id"] == better.challenger and champion["previous"] == better.champion
    lineage = json.loads(client.get_object(Bucket=bucket, Key=f"models/models/{better.challenger}/lineage.json")
                         ["Body"].read())
    assert lineage["parent"] == better.champion and len(lineage["new_studies"]) == 40
    state = RetrainState.load(storage, S3Uri(bucket, "retrain/"))
    assert len(state.ingested) == 40 and state.last_run == "run-1"
    assert storage.exists(S3Uri.parse(state.split).join("_SUCCESS.json"))
    first_split = pd.read_csv(storage.download(S3Uri.parse(state.split).join("split.csv"), tmp_path / "s1"))
    assert pushgateway.samples("mammo_retrain_promoted", job="mammo_retrain", pipeline=pipeline_id) == [1.0]

    # Ten more studies arrive; this challenger is worse than the champion and must not replace it.
    add_studies(client, bucket, 40, 10)
    worse = retrain(FakeSteps(challenger_quality=0.0), run_id="run-2").execute()
    assert worse.decision == "rejected" and worse.new_studies == [f"P{n:03d}" for n in range(40, 50)]
    assert worse.champion == better.challenger
    record_decision(worse, tmp_path / "record-2")
    champion = json.loads(client.get_object(Bucket=bucket, Key="models/champion.json")["Body"].read())
    assert champion["model_id"] == better.challenger  # unchanged
    assert storage.exists(S3Uri(bucket, f"models/models/{worse.challenger}/_SUCCESS.json"))  # kept for the record
    state = RetrainState.load(storage, S3Uri(bucket, "retrain/"))
    assert len(state.ingested) == 50 and state.last_run == "run-2"
    # The locked test set: every patient of the first split kept its subset.
    second_split = pd.read_csv(storage.download(S3Uri.parse(state.split).join("split.csv"), tmp_path / "s2"))
    assert locked_split_violations(first_split, second_split) == []
    assert len(second_split) == 50
    assert pushgateway.samples("mammo_retrain_decision", job="mammo_retrain", pipeline=pipeline_id,
                               decision="rejected") == [1.0]
    assert pushgateway.samples("mammo_retrain_promoted", job="mammo_retrain", pipeline=pipeline_id) == [0.0]


def test_a_moved_test_patient_aborts_the_run_and_keeps_the_state(retrain, s3_server, bucket, seed_model, capfd):
    client, storage = s3_server.client(), Storage()
    add_studies(client, bucket, 0, 20)
    retrain(FakeSteps(challenger_quality=4.0), run_id="run-1").execute(seed_model)
    before = RetrainState.load(storage, S3Uri(bucket, "retrain/"))
    champion_before = client.get_object(Bucket=bucket, Key="models/champion.json")["Body"].read()

    add_studies(client, bucket, 20, 10)
    with pytest.raises(TaskFailed, match="task gate failed"):
        retrain(FakeSteps(challenger_quality=9.0, keep_previous_split=False), run_id="run-2").execute()
    assert "locked split changed" in capfd.readouterr().err
    assert RetrainState.load(storage, S3Uri(bucket, "retrain/")) == before
    assert client.get_object(Bucket=bucket, Key="models/champion.json")["Body"].read() == champion_before


def test_a_failed_run_resumed_with_its_run_id_skips_the_finished_tasks(retrain, s3_server, bucket, seed_model):
    """The rule of `mammo pipeline run`: the rerun starts at the failed task; what finished is not redone."""
    add_studies(s3_server.client(), bucket, 0, 20)
    failing = FakeSteps(challenger_quality=4.0, fail=("challenger",))
    with pytest.raises(TaskFailed, match="task challenger failed"):
        retrain(failing, run_id="run-1").execute(seed_model)
    assert failing.calls == ["discover", "preprocess-new", "training-data", "split-hospital", "challenger-stage1",
                             "challenger"]
    assert RetrainState.load(Storage(), S3Uri(bucket, "retrain/")).ingested == []  # the state did not move
    resumed = FakeSteps(challenger_quality=4.0)
    decision = retrain(resumed, run_id="run-1").execute(seed_model)
    assert resumed.calls == ["challenger", "score-champion", "score-challenger", "gate"]
    assert decision.decision == "promoted" and len(decision.new_studies) == 20
    again = FakeSteps(challenger_quality=4.0)
    assert retrain(again, run_id="run-1").execute(seed_model).decision == "promoted"
    assert again.calls == []  # everything up to date: nothing reruns (and nothing is registered twice)


def test_locked_split_violations_names_moved_and_missing_patients():
    before = pd.DataFrame({"patient_id": ["a", "b", "c"], "split": ["test", "train", "validation"]})
    after = pd.DataFrame({"patient_id": ["a", "b", "d"], "split": ["train", "train", "test"]})
    assert locked_split_violations(before, after) == ["a: test -> train", "c: validation -> missing"]


def test_mammo_retrain_cli_records_a_skip_in_s3(s3_server, s3_env, bucket, tmp_path):
    from jobs.cli import main

    code = main(["retrain", "--hospital", f"s3://{bucket}/hospital/incoming/",
                 "--cohort", f"s3://{bucket}/hospital/cohort.csv", "--registry", f"s3://{bucket}/models/",
                 "--state", f"s3://{bucket}/retrain/", "--work", str(tmp_path / "w"),
                 "--out", f"s3://{bucket}/retrain/runs/cron-1/", "--profile", "ci"])
    assert code == 0
    record = json.loads(s3_server.client().get_object(Bucket=bucket, Key="retrain/runs/cron-1/decision.json")
                        ["Body"].read())
    assert record["decision"] == "skipped_none"
    assert main(["retrain", "--hospital", "/local/folder", "--cohort", "x", "--registry", "y", "--state", "z",
                 "--work", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
