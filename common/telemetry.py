"""Prometheus metrics of batch steps, pushed to a Pushgateway when `PUSHGATEWAY_URL` is set.

Batch pods live shorter than a scrape interval, so they push. Every push uses its own CollectorRegistry
(nothing leaks between steps in one process) and POST semantics (`pushadd`), which replace only the
metrics of the same name inside the group: a failed run therefore updates `..._success` and the duration
but leaves the previous `mammo_step_last_success_unixtime` standing, which is what staleness alerts need.
Grouping keys are stable names, never per-run ids: `job` = `mammo_<step>`, `pipeline` = `$PIPELINE_ID`
(default `local`) and, when a step runs more than once per pipeline (six baseline-infer tasks),
`task` = `$MAMMO_TASK`. A push that fails only prints a warning: telemetry never fails a step.

Run as `python -m common.telemetry` (the Argo exit handler) it records the workflow outcome from the
environment variables WORKFLOW_STATUS and WORKFLOW_DURATION. `metrics_markdown()` renders `METRICS`,
the documented list below, as a table for dashboards.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import __version__

PUSHGATEWAY_ENV = "PUSHGATEWAY_URL"
PIPELINE_ENV = "PIPELINE_ID"
TASK_ENV = "MAMMO_TASK"
PUSH_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Metric:
    name: str
    help: str
    group: str  # which grouping key set it is pushed under
    labels: tuple[str, ...] = ()


STEP_GROUP = "job=mammo_<step>, pipeline, [task]"
MODEL_GROUP = "job=mammo_model, pipeline, row"
SHIFT_GROUP = "job=mammo_domain_shift, pipeline, model, domain"
METRICS: tuple[Metric, ...] = (
    Metric("mammo_step_duration_seconds", "Wall time of the step's last run.", STEP_GROUP),
    Metric("mammo_step_success", "1 if the step's last run succeeded, else 0.", STEP_GROUP),
    Metric("mammo_step_last_run_unixtime", "When the step's last run ended.", STEP_GROUP),
    Metric("mammo_step_last_success_unixtime", "When the step last succeeded (pushed on success only).", STEP_GROUP),
    Metric("mammo_step_images_processed", "Images the step's last successful run processed.", STEP_GROUP),
    Metric("mammo_step_images_rejected", "Images the step's last successful run rejected.", STEP_GROUP),
    Metric("mammo_step_info", "Always 1; labels carry the profile and package version.", STEP_GROUP,
           ("profile", "version")),
    Metric("mammo_train_epoch", "Last completed training epoch (0-based).", STEP_GROUP),
    Metric("mammo_train_loss", "Training loss of the last completed epoch.", STEP_GROUP),
    Metric("mammo_train_val_loss", "Validation loss of the last completed epoch.", STEP_GROUP),
    Metric("mammo_train_val_auc", "Validation ROC AUC of the last completed epoch.", STEP_GROUP),
    Metric("mammo_train_learning_rate", "Learning rate in the last completed epoch.", STEP_GROUP),
    Metric("mammo_model_auc", "Test ROC AUC of a report row.", MODEL_GROUP),
    Metric("mammo_model_auc_ci_low", "Lower end of the 95% CI of the AUC.", MODEL_GROUP),
    Metric("mammo_model_auc_ci_high", "Upper end of the 95% CI of the AUC.", MODEL_GROUP),
    Metric("mammo_model_sensitivity", "Test sensitivity at the validation G-mean threshold.", MODEL_GROUP),
    Metric("mammo_model_specificity", "Test specificity at the validation G-mean threshold.", MODEL_GROUP),
    Metric("mammo_model_accuracy", "Test accuracy at the validation G-mean threshold.", MODEL_GROUP),
    Metric("mammo_model_threshold", "Decision threshold chosen on the validation split.", MODEL_GROUP),
    Metric("mammo_model_cases", "Number of test cases (images or patients) behind the row.", MODEL_GROUP),
    Metric("mammo_model_positives", "Number of positive test cases behind the row.", MODEL_GROUP),
    Metric("mammo_model_brier", "Brier score of the test scores (as scored, before recalibration).", MODEL_GROUP),
    Metric("mammo_model_ece", "Expected calibration error on test, 10 equal-width bins.", MODEL_GROUP),
    Metric("mammo_model_calibration_slope", "Calibration slope on test (1 is ideal).", MODEL_GROUP),
    Metric("mammo_model_calibration_intercept", "Calibration-in-the-large on test (0 is ideal).", MODEL_GROUP),
    Metric("mammo_model_auprc", "Area under the test precision-recall curve (average precision).", MODEL_GROUP),
    Metric("mammo_model_sensitivity_at_specificity", "Test sensitivity at a fixed test specificity (ROC).",
           MODEL_GROUP, ("specificity",)),
    Metric("mammo_model_specificity_at_sensitivity", "Test specificity at a fixed test sensitivity (ROC).",
           MODEL_GROUP, ("sensitivity",)),
    Metric("mammo_domain_shift_intensity_distance", "Breast-intensity histogram W1 distance from the training "
           "domain.", SHIFT_GROUP),
    Metric("mammo_domain_shift_mmd2", "Penultimate-feature MMD^2 from the training domain.", SHIFT_GROUP),
    Metric("mammo_domain_shift_p_value", "Permutation p-value of that MMD^2.", SHIFT_GROUP),
    Metric("mammo_domain_shift_auc_drop", "In-domain test AUC minus the test AUC on the domain.", SHIFT_GROUP),
    Metric("mammo_workflow_success", "1 if the last workflow run succeeded, else 0.", "job=mammo_workflow, pipeline"),
    Metric("mammo_workflow_duration_seconds", "Wall time of the last workflow run.", "job=mammo_workflow, pipeline"),
    Metric("mammo_workflow_last_run_unixtime", "When the last workflow run ended.", "job=mammo_workflow, pipeline"),
    Metric("mammo_workflow_last_success_unixtime", "When a workflow run last succeeded (success only).",
           "job=mammo_workflow, pipeline"),
    Metric("mammo_retrain_decision", "1 for the decision of the last retraining run, 0 for the others.",
           "job=mammo_retrain, pipeline", ("decision",)),
    Metric("mammo_retrain_new_studies", "New studies the last retraining run found.", "job=mammo_retrain, pipeline"),
    Metric("mammo_retrain_champion_auc", "Champion's AUC on the locked test set.", "job=mammo_retrain, pipeline"),
    Metric("mammo_retrain_challenger_auc", "Challenger's AUC on the locked test set.", "job=mammo_retrain, pipeline"),
    Metric("mammo_retrain_p_value", "Paired DeLong p-value, challenger vs champion.", "job=mammo_retrain, pipeline"),
    Metric("mammo_retrain_promoted", "1 if the last retraining run promoted its challenger.",
           "job=mammo_retrain, pipeline"),
)
_HELP = {metric.name: metric.help for metric in METRICS}
_LABELS = {metric.name: metric.labels for metric in METRICS}

RETRAIN_DECISIONS = ("promoted", "rejected", "skipped_none", "skipped_too_few", "failed")
_EPOCH_KEYS = {"loss": "mammo_train_loss", "val_loss": "mammo_train_val_loss", "val_auc": "mammo_train_val_auc",
               "lr": "mammo_train_learning_rate", "learning_rate": "mammo_train_learning_rate"}
_MODEL_KEYS = {"auc": "mammo_model_auc", "sensitivity": "mammo_model_sensitivity",
               "specificity": "mammo_model_specificity", "accuracy": "mammo_model_accuracy",
               "threshold": "mammo_model_threshold", "n": "mammo_model_cases", "n_pos": "mammo_model_positives",
               "brier": "mammo_model_brier", "ece": "mammo_model_ece", "auprc": "mammo_model_auprc",
               "calibration_slope": "mammo_model_calibration_slope",
               "calibration_intercept": "mammo_model_calibration_intercept"}
_SHIFT_KEYS = {"intensity_distance": "mammo_domain_shift_intensity_distance", "mmd2": "mammo_domain_shift_mmd2",
               "p_value": "mammo_domain_shift_p_value", "auc_drop": "mammo_domain_shift_auc_drop"}
# Count keys a step may use in `_SUCCESS.json` for the images it handled.
_PROCESSED_KEYS = ("images", "images_processed", "processed")
_REJECTED_KEYS = ("rejected", "images_rejected")


def metrics_markdown() -> str:
    """The documented metrics as a Markdown table (README / Grafana panel list)."""
    rows = ["| metric | grouping key | labels | meaning |", "|---|---|---|---|"]
    rows += [f"| `{m.name}` | {m.group} | {', '.join(m.labels)} | {m.help} |" for m in METRICS]
    return "\n".join(rows)


def gateway_url() -> str | None:
    return os.environ.get(PUSHGATEWAY_ENV) or None


def pipeline_id() -> str:
    return os.environ.get(PIPELINE_ENV) or "local"


def job_name(step: str) -> str:
    return "mammo_" + step.replace("-", "_")


def _step_grouping() -> dict[str, str]:
    key = {"pipeline": pipeline_id()}
    if os.environ.get(TASK_ENV):
        key["task"] = os.environ[TASK_ENV]
    return key


def _push(job: str, grouping: Mapping[str, str], values: Mapping[str, float],
          labelled: Mapping[str, Mapping[Any, float]] | None = None) -> bool:  # label values tuple -> value
    """POST gauges to the gateway under one group; returns False (after a warning) when it could not.

    NaN is pushed as NaN on purpose: it overwrites a value that no longer applies (a skipped run's AUC).
    """
    url = gateway_url()
    if url is None:
        return False
    from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

    registry = CollectorRegistry()
    for name, value in values.items():
        if value is None:
            continue
        Gauge(name, _HELP[name], registry=registry).set(float(value))
    for name, series in (labelled or {}).items():
        gauge = Gauge(name, _HELP[name], _LABELS[name], registry=registry)
        for label_values, value in series.items():
            gauge.labels(*label_values).set(float(value))
    try:
        pushadd_to_gateway(url, job=job, grouping_key=dict(grouping), registry=registry,
                           timeout=PUSH_TIMEOUT_SECONDS)
        return True
    except Exception as error:  # a monitoring outage must never fail the batch job it watches
        print(f"telemetry: push of {job} to {url} failed: {error}", file=sys.stderr)
        return False


@dataclass
class StepRun:
    """Handed to the step's caller, which sets `succeeded` once the step returned exit code 0 and its output
    was published: a step whose upload failed has not succeeded, whatever its body returned."""

    step: str
    succeeded: bool = False
    image_counts: dict[str, float] = field(default_factory=dict)

    def record_output(self, out_dir: str | Path | None) -> None:
        """Take the image counts from the step's `_SUCCESS.json` now (a staged output folder is removed later)."""
        self.image_counts = _image_counts(out_dir)


@contextmanager
def step_run(step: str, profile: str | None = None, out_dir: str | Path | None = None) -> Iterator[StepRun]:
    """Time a step and push its outcome in `finally`, so crashes are recorded as failures too."""
    run = StepRun(step)
    started = time.time()
    try:
        yield run
    finally:
        ended = time.time()
        values: dict[str, float] = {
            "mammo_step_duration_seconds": ended - started,
            "mammo_step_success": 1.0 if run.succeeded else 0.0,
            "mammo_step_last_run_unixtime": ended,
        }
        if run.succeeded:
            values["mammo_step_last_success_unixtime"] = ended
            values.update(run.image_counts or _image_counts(out_dir))
        info = {"mammo_step_info": {(str(profile or ""), __version__): 1.0}}
        _push(job_name(step), _step_grouping(), values, info)


def _image_counts(out_dir: str | Path | None) -> dict[str, float]:
    """Images processed/rejected as the step recorded them in its `_SUCCESS.json` counts."""
    if out_dir is None:
        return {}
    marker = Path(out_dir) / "_SUCCESS.json"
    try:
        counts = json.loads(marker.read_text()).get("counts", {})
    except (OSError, ValueError):
        return {}
    found: dict[str, float] = {}
    for metric, keys in (("mammo_step_images_processed", _PROCESSED_KEYS),
                         ("mammo_step_images_rejected", _REJECTED_KEYS)):
        value = next((counts[k] for k in keys if isinstance(counts.get(k), (int, float))), None)
        if value is not None:
            found[metric] = float(value)
    return found


def push_epoch(step: str, epoch: int, logs: Mapping[str, float]) -> None:
    """Per-epoch training curves, so a long GPU run can be watched while it trains."""
    values = {"mammo_train_epoch": float(epoch)}
    for key, name in _EPOCH_KEYS.items():
        if key in logs:
            values[name] = float(logs[key])
    _push(job_name(step), _step_grouping(), values)


def push_model_metrics(row: str, metrics: Mapping[str, Any]) -> None:
    """Final test metrics of one report row (the `metrics.json` fields, calibration, AUPRC and, under
    `operating_points`, {("specificity" | "sensitivity", "0.90"): value}); one group per row."""
    values = {name: float(metrics[key]) for key, name in _MODEL_KEYS.items()
              if isinstance(metrics.get(key), (int, float))}
    ci = metrics.get("auc_ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        values["mammo_model_auc_ci_low"], values["mammo_model_auc_ci_high"] = float(ci[0]), float(ci[1])
    labelled: dict[str, dict[tuple[str, ...], float]] = {}
    for (fixed, target), value in (metrics.get("operating_points") or {}).items():
        name = "mammo_model_sensitivity_at_specificity" if fixed == "specificity" else \
            "mammo_model_specificity_at_sensitivity"
        labelled.setdefault(name, {})[(target,)] = float(value)
    _push("mammo_model", {"pipeline": pipeline_id(), "row": row}, values, labelled)


def push_domain_shift(model: str, domain: str, measures: Mapping[str, Any]) -> None:
    """The report's domain-shift diagnostics of one (baseline model, domain) pair."""
    values = {name: float(measures[key]) for key, name in _SHIFT_KEYS.items()
              if isinstance(measures.get(key), (int, float))}
    _push("mammo_domain_shift", {"pipeline": pipeline_id(), "model": model, "domain": domain}, values)


def push_retrain_decision(decision: str, new_studies: int, champion_auc: float | None = None,
                          challenger_auc: float | None = None, p_value: float | None = None) -> None:
    """One-hot decision of a retraining run plus the numbers it was based on."""
    if decision not in RETRAIN_DECISIONS:
        raise ValueError(f"unknown retraining decision {decision!r}")
    values = {
        "mammo_retrain_new_studies": float(new_studies),
        "mammo_retrain_promoted": 1.0 if decision == "promoted" else 0.0,
        "mammo_retrain_champion_auc": champion_auc if champion_auc is not None else math.nan,
        "mammo_retrain_challenger_auc": challenger_auc if challenger_auc is not None else math.nan,
        "mammo_retrain_p_value": p_value if p_value is not None else math.nan,
    }
    one_hot = {"mammo_retrain_decision": {(d,): 1.0 if d == decision else 0.0 for d in RETRAIN_DECISIONS}}
    _push("mammo_retrain", {"pipeline": pipeline_id()}, values, one_hot)


def push_workflow_outcome(status: str, duration_seconds: float) -> None:
    """What the Argo exit handler records: Succeeded or not, and how long the whole run took."""
    ended = time.time()
    succeeded = status == "Succeeded"
    values = {
        "mammo_workflow_success": 1.0 if succeeded else 0.0,
        "mammo_workflow_duration_seconds": duration_seconds,
        "mammo_workflow_last_run_unixtime": ended,
    }
    if succeeded:
        values["mammo_workflow_last_success_unixtime"] = ended
    _push("mammo_workflow", {"pipeline": pipeline_id()}, values)


if __name__ == "__main__":
    push_workflow_outcome(os.environ.get("WORKFLOW_STATUS", "Unknown"),
                          float(os.environ.get("WORKFLOW_DURATION") or "nan"))
