"""Image, breast and exam (patient) level results of one model row.

A screening reader decides per breast (recall for the left or the right side) and per exam (recall the
woman or not); the CNN scores single views. The views are combined by a rule stated in every table:
* breast = the CC and MLO views of one side (patient_id + laterality); label 1 when the side has the cancer;
* exam = all views of the patient's screening exam (one exam per patient in these cohorts, so exam =
  patient); label 1 for a case;
* `max`: as suspicious as the most suspicious view (screening logic); `mean`: the average view, smoother
  but a unilateral cancer is diluted by the healthy views.
Each level gets its own validation G-mean threshold (a threshold on image scores does not transfer to a
max or a mean), AUC with a 95% bootstrap CI that resamples patients at every level, and sensitivity and
specificity with Wilson CIs (common.metrics.evaluate).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from common import metrics

RULES = ("max", "mean")


def breast_scores(frame: pd.DataFrame, how: str = "max") -> pd.DataFrame:
    """One row per breast (patient_id, laterality): split, label = any positive view, score = max or mean."""
    if how not in RULES:
        raise ValueError(f"breast score rule must be max or mean, not {how!r}")
    grouped = frame.groupby(["patient_id", "laterality"], sort=True)
    out = grouped.agg(split=("split", "first"), label=("label", "max"), score=("score", how)).reset_index()
    out["breast_id"] = out["patient_id"].astype(str) + "_" + out["laterality"].astype(str)
    return out


def level_frames(scores: pd.DataFrame, level: str) -> dict[tuple[str, str], pd.DataFrame]:
    """(level, rule) -> frame with split, label, score, patient_id; a patient-level row has only itself."""
    if level == "patient" or "image_id" not in scores.columns:
        return {("exam", "patient-level model"): scores}
    frames: dict[tuple[str, str], pd.DataFrame] = {("image", "-"): scores}
    if "laterality" in scores.columns:
        for how in RULES:
            frames[("breast", how)] = breast_scores(scores, how)
    for how in RULES:
        frames[("exam", how)] = metrics.patient_scores(scores, how=how)
    return frames


def evaluate_levels(scores: pd.DataFrame, level: str, *, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """One record per (level, rule): metrics.evaluate's fields, or a note when it cannot be computed."""
    records = []
    for (unit, rule), frame in level_frames(scores, level).items():
        record: dict[str, Any] = {"level": unit, "rule": rule}
        try:
            values = metrics.evaluate(frame, level="patient" if unit == "exam" else unit, n_boot=n_boot, seed=seed)
        except ValueError as error:
            records.append(record | {"note": f"not computable: {error}"})
            continue
        records.append(record | {key: values[key] for key in (
            "n", "n_pos", "auc", "auc_ci95", "threshold", "sensitivity", "sensitivity_ci95", "specificity",
            "specificity_ci95", "accuracy")} | {"note": ""})  # fmt: skip
    return records
