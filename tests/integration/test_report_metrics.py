"""The report step pushes every documented `mammo_model_*` and `mammo_domain_shift_*` metric, with the values
of its summary.json, to Debian's real prometheus-pushgateway on loopback."""

from __future__ import annotations

import math

import pytest
from helpers import make_workdir, run_report

from common import telemetry


def _same(pushed: list[float], expected: float) -> bool:
    if len(pushed) != 1:
        return False
    return math.isnan(pushed[0]) if math.isnan(expected) else pushed[0] == pytest.approx(expected)


def _expected(summary: dict, row: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Metric name and labels -> value, read straight from summary.json's sections."""
    model = summary["models"][row]
    raw = summary["calibration"][row]["raw"]
    points = summary["operating_points"][row]
    values = {
        "mammo_model_auc": model["auc"], "mammo_model_auc_ci_low": model["auc_ci95"][0],
        "mammo_model_auc_ci_high": model["auc_ci95"][1], "mammo_model_sensitivity": model["sensitivity"],
        "mammo_model_specificity": model["specificity"], "mammo_model_accuracy": model["accuracy"],
        "mammo_model_threshold": model["threshold"], "mammo_model_cases": model["n"],
        "mammo_model_positives": model["n_pos"], "mammo_model_brier": raw["brier"], "mammo_model_ece": raw["ece"],
        "mammo_model_calibration_slope": raw["slope"], "mammo_model_calibration_intercept": raw["intercept"],
        "mammo_model_auprc": points["auprc"],
    }  # fmt: skip
    found = {(name, ()): float("nan") if value is None else float(value) for name, value in values.items()}
    for point in points["points"]:
        name = f"mammo_model_{point['reported']}_at_{point['fixed']}"
        found[(name, ((point["fixed"], f"{point['target']:.2f}"),))] = point["on_test"]
    return found


def test_report_pushes_every_documented_model_and_shift_metric(pushgateway, pipeline_id, monkeypatch, tmp_path):
    monkeypatch.setenv("PUSHGATEWAY_URL", pushgateway.url)
    monkeypatch.setenv("PIPELINE_ID", pipeline_id)
    root, _ = make_workdir(tmp_path)
    summary = run_report(root, tmp_path / "report")

    documented = {m.name for m in telemetry.METRICS if m.name.startswith("mammo_model_")}
    for row in summary["models"]:
        expected = _expected(summary, row)
        assert {name for name, _ in expected} == documented  # the test covers every documented metric
        for (name, labels), value in expected.items():
            pushed = pushgateway.samples(name, job="mammo_model", pipeline=pipeline_id, row=row, **dict(labels))
            assert _same(pushed, value), (row, name, labels, pushed, value)

    shift = {m.name for m in telemetry.METRICS if m.name.startswith("mammo_domain_shift_")}
    assert len(summary["domain_shift"]["pairs"]) == 6
    for pair in summary["domain_shift"]["pairs"]:
        group = {"job": "mammo_domain_shift", "pipeline": pipeline_id, "model": pair["model"], "domain": pair["domain"]}
        for name in shift:
            value = pair[name.removeprefix("mammo_domain_shift_")]
            assert _same(pushgateway.samples(name, **group), float("nan") if value is None else value), (pair, name)
