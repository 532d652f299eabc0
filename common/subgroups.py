"""Test results of one model within subgroups: view (CC, MLO), age stratum of the split, breast density.

Every cell is shown, however small, with its n, positives and patients: a reader must see that a subgroup
AUC rests on 3 cancers rather than have the cell hidden. Cells with fewer than `SMALL_CELL` positives or
negatives are marked as small; a cell with one class has no AUC (and says so). The threshold is the row's
frozen validation G-mean threshold, never re-chosen per subgroup; AUC CIs resample patients
(common.metrics.bootstrap_auc_ci), sensitivity and specificity carry Wilson CIs.

Density is the ACR BI-RADS breast composition, read from a `density` column of the cohort (images.csv or
cohort.csv) where the dataset has it: A-D or 1-4 (also "ACR C", "3.0"); anything else counts as unknown.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from common import metrics

SMALL_CELL = 10
DENSITY_CLASSES = ("A", "B", "C", "D")
UNKNOWN = "unknown"
_DENSITY_CODES = {**{c: c for c in DENSITY_CLASSES}, "1": "A", "2": "B", "3": "C", "4": "D"}


def normalise_density(value: Any) -> str:
    """ACR class A-D of one density entry, or 'unknown'."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return UNKNOWN
    text = str(value).strip().upper().replace("ACR", "").replace("DENSITY", "").replace(" ", "")
    if text.endswith(".0"):
        text = text[:-2]
    return _DENSITY_CODES.get(text, UNKNOWN)


def cell(frame: pd.DataFrame, threshold: float, *, n_boot: int, seed: int) -> dict[str, Any]:
    """n, positives, patients, AUC (95% CI, patients resampled), sensitivity and specificity of test rows."""
    y, s = frame["label"].to_numpy().astype(int), frame["score"].to_numpy(float)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    binary = metrics.binary_metrics(y, s, threshold)
    groups = frame["patient_id"].to_numpy() if "patient_id" in frame else None
    notes = []
    if n_pos == 0 or n_neg == 0:
        notes.append("one class only: no AUC")
    elif min(n_pos, n_neg) < SMALL_CELL:
        notes.append(f"small cell (< {SMALL_CELL} pos. or neg.)")
    return {
        "n": int(len(y)), "n_pos": n_pos, "patients": int(frame["patient_id"].nunique()) if groups is not None else 0,
        "auc": metrics.roc_auc(y, s),
        "auc_ci95": list(metrics.bootstrap_auc_ci(y, s, n_boot=n_boot, seed=seed, groups=groups)),
        **{name: binary[name] for name in ("sensitivity", "sensitivity_ci95", "specificity", "specificity_ci95")},
        "small": bool(notes), "note": "; ".join(notes),
    }  # fmt: skip


def subgroup_table(test: pd.DataFrame, attributes: dict[str, pd.Series], threshold: float, *,
                   n_boot: int, seed: int) -> list[dict[str, Any]]:  # fmt: skip
    """One record per (attribute, value) cell of the test rows; `attributes` are aligned to `test`'s index.

    Values are listed in sorted order with 'unknown' last; an attribute whose values are all unknown is
    left to the caller to explain (it returns no cells for it).
    """
    records = []
    for name, values in attributes.items():
        values = values.reindex(test.index).astype(object)
        values = values.where(values.notna(), UNKNOWN).astype(str)
        if (values == UNKNOWN).all():
            continue
        order = sorted(set(values) - {UNKNOWN}) + ([UNKNOWN] if (values == UNKNOWN).any() else [])
        for value in order:
            rows = test[values == value]
            records.append({"attribute": name, "value": value, **cell(rows, threshold, n_boot=n_boot, seed=seed)})
    return records
