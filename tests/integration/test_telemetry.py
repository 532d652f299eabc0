"""Pushgateway telemetry against Debian's real prometheus-pushgateway on loopback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from common import telemetry
from common.artifacts import step_output


@pytest.fixture
def gateway_env(pushgateway, pipeline_id, monkeypatch):
    monkeypatch.setenv("PUSHGATEWAY_URL", pushgateway.url)
    monkeypatch.setenv("PIPELINE_ID", pipeline_id)
    monkeypatch.delenv("MAMMO_TASK", raising=False)
    return pushgateway


def test_successful_step_pushes_duration_counts_and_last_success(gateway_env, pipeline_id, tmp_path):
    out = tmp_path / "out"
    before = time.time()
    with telemetry.step_run("preprocess", profile="ci", out_dir=out) as run:
        with step_output("preprocess", out, {}) as record:
            record.counts.update({"images": 17, "rejected": 3})
        time.sleep(0.2)
        run.succeeded = True
    after = time.time()

    group = {"job": "mammo_preprocess", "pipeline": pipeline_id}
    [duration] = gateway_env.samples("mammo_step_duration_seconds", **group)
    assert 0.2 <= duration <= after - before
    assert gateway_env.samples("mammo_step_success", **group) == [1.0]
    assert gateway_env.samples("mammo_step_images_processed", **group) == [17.0]
    assert gateway_env.samples("mammo_step_images_rejected", **group) == [3.0]
    [last_success] = gateway_env.samples("mammo_step_last_success_unixtime", **group)
    assert before <= last_success <= after
    assert gateway_env.samples("mammo_step_info", profile="ci", **group) == [1.0]


def test_failed_step_keeps_the_previous_last_success(gateway_env, pipeline_id):
    group = {"job": "mammo_split", "pipeline": pipeline_id}
    with telemetry.step_run("split") as run:
        run.succeeded = True
    [first_success] = gateway_env.samples("mammo_step_last_success_unixtime", **group)

    time.sleep(0.05)
    with pytest.raises(RuntimeError):
        with telemetry.step_run("split"):
            raise RuntimeError("the step crashed")
    assert gateway_env.samples("mammo_step_success", **group) == [0.0]
    assert gateway_env.samples("mammo_step_last_success_unixtime", **group) == [first_success]
    [last_run] = gateway_env.samples("mammo_step_last_run_unixtime", **group)
    assert last_run > first_success


def test_tasks_of_one_step_get_separate_groups(gateway_env, pipeline_id, monkeypatch):
    for task, count in (("infer-a-film", 5), ("infer-ab-hospital", 9)):
        monkeypatch.setenv("MAMMO_TASK", task)
        telemetry.push_epoch("baseline-infer", count, {"loss": float(count)})
    for task, count in (("infer-a-film", 5), ("infer-ab-hospital", 9)):
        assert gateway_env.samples("mammo_train_loss", job="mammo_baseline_infer", pipeline=pipeline_id,
                                   task=task) == [float(count)]


def test_epoch_metrics_stay_next_to_step_metrics(gateway_env, pipeline_id):
    group = {"job": "mammo_finetune_stage1", "pipeline": pipeline_id}
    with telemetry.step_run("finetune-stage1") as run:
        for epoch, (loss, val_loss, val_auc) in enumerate([(0.9, 0.8, 0.6), (0.7, 0.75, 0.66)]):
            telemetry.push_epoch("finetune-stage1", epoch, {"loss": loss, "val_loss": val_loss, "val_auc": val_auc,
                                                            "lr": 2e-4})
        run.succeeded = True
    assert gateway_env.samples("mammo_train_epoch", **group) == [1.0]
    assert gateway_env.samples("mammo_train_loss", **group) == [0.7]
    assert gateway_env.samples("mammo_train_val_loss", **group) == [0.75]
    assert gateway_env.samples("mammo_train_val_auc", **group) == [0.66]
    assert gateway_env.samples("mammo_train_learning_rate", **group) == [2e-4]
    assert gateway_env.samples("mammo_step_success", **group) == [1.0]  # the final push kept the epoch metrics


def test_model_rows_do_not_overwrite_each_other(gateway_env, pipeline_id):
    rows = {"baseline": 0.61, "fine-tune config 2": 0.78}
    for row, auc in rows.items():
        telemetry.push_model_metrics(row, {"auc": auc, "auc_ci95": [auc - 0.1, auc + 0.05], "sensitivity": 0.7,
                                           "specificity": 0.65, "accuracy": 0.66, "threshold": 0.31, "n": 120,
                                           "n_pos": 30, "level": "image"})
    for row, auc in rows.items():
        group = {"job": "mammo_model", "pipeline": pipeline_id, "row": row}
        assert gateway_env.samples("mammo_model_auc", **group) == [auc]
        assert gateway_env.samples("mammo_model_auc_ci_low", **group) == [pytest.approx(auc - 0.1)]
        assert gateway_env.samples("mammo_model_cases", **group) == [120.0]


def test_retrain_decision_is_one_hot(gateway_env, pipeline_id):
    telemetry.push_retrain_decision("rejected", 25, 0.8, 0.7, 0.03)
    group = {"job": "mammo_retrain", "pipeline": pipeline_id}
    for decision in telemetry.RETRAIN_DECISIONS:
        expected = 1.0 if decision == "rejected" else 0.0
        assert gateway_env.samples("mammo_retrain_decision", decision=decision, **group) == [expected]
    assert gateway_env.samples("mammo_retrain_new_studies", **group) == [25.0]
    assert gateway_env.samples("mammo_retrain_promoted", **group) == [0.0]
    with pytest.raises(ValueError):
        telemetry.push_retrain_decision("maybe", 1)


def test_workflow_outcome_from_the_exit_handler(gateway_env, pipeline_id):
    import os
    import subprocess
    import sys

    env = {**os.environ, "WORKFLOW_STATUS": "Failed", "WORKFLOW_DURATION": "42.5"}
    subprocess.run([sys.executable, "-m", "common.telemetry"], env=env, check=True)
    group = {"job": "mammo_workflow", "pipeline": pipeline_id}
    assert gateway_env.samples("mammo_workflow_success", **group) == [0.0]
    assert gateway_env.samples("mammo_workflow_duration_seconds", **group) == [42.5]
    assert gateway_env.samples("mammo_workflow_last_success_unixtime", **group) == []


def test_every_pushed_metric_is_documented(gateway_env, pipeline_id, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    with telemetry.step_run("report", out_dir=tmp_path) as run:
        run.succeeded = True
    documented = {metric.name for metric in telemetry.METRICS}
    ours = {s.name for f in text_string_to_metric_families(gateway_env.metrics_text()) for s in f.samples
            if s.labels.get("pipeline") == pipeline_id}
    gateway_own = {"push_time_seconds", "push_failure_time_seconds"}  # added by the Pushgateway per group
    assert ours - gateway_own and ours - gateway_own <= documented
    table = telemetry.metrics_markdown()
    assert all(f"`{name}`" in table for name in documented)


def test_gateway_down_only_warns(monkeypatch, capsys, tmp_path: Path):
    monkeypatch.setenv("PUSHGATEWAY_URL", "http://127.0.0.1:9")
    with telemetry.step_run("synth") as run:
        run.succeeded = True
    assert "telemetry: push of mammo_synth to http://127.0.0.1:9 failed" in capsys.readouterr().err


def test_no_gateway_no_push(monkeypatch, capsys):
    monkeypatch.delenv("PUSHGATEWAY_URL", raising=False)
    with telemetry.step_run("synth") as run:
        run.succeeded = True
    assert capsys.readouterr().err == ""
