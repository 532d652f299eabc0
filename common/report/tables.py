"""Thesis Tables 2, 3, 4, 5, 8 and 9 rebuilt from the work directory, with changes and paired tests.

Domain names follow the pipeline: `film` plays CBIS-DDSM (source A), `ffdm` INbreast (source B) and
`hospital` the thesis' private target data set. Metrics are copied from each step's metrics.json,
never recomputed, so the report shows exactly what the steps measured. Relative changes follow the
thesis' arithmetic: (new - reference) / reference x 100 (e.g. Config 1's +6.23% AUC = 0.802 / 0.755 - 1).

Paired comparisons use DeLong's test on the test cases both models scored (joined by image_id, or
by patient_id when one side is patient level). The radiomics model is patient level, so the CNN it
is compared with is collapsed to one score per patient with the max over the four views (a patient
is as suspicious as her most suspicious view; `common.metrics.patient_scores`). In-domain and
out-of-domain results come from different cases, so that drop gets relative changes but no paired test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from common import metrics
from common.artifacts import error_line
from common.report.workdir import METRIC_FIELDS, WorkDir

PATIENT_RULE = "max"


@dataclass(frozen=True)
class ModelRow:
    key: str  # the row's name in summary.json
    folder: str
    model: str
    pretrained_with: str
    dataset: str
    setting: str


AB = "film+ffdm (A+B)"
ROWS = (
    ModelRow("a-film", "infer-a-film", "VGG16 End2End", "film (A)", "film", "in-domain"),
    ModelRow("ab-film", "infer-ab-film", "VGG16 End2End", AB, "film", "in-domain"),
    ModelRow("a-ffdm", "infer-a-ffdm", "VGG16 End2End", "film (A)", "ffdm", "in-domain"),
    ModelRow("ab-ffdm", "infer-ab-ffdm", "VGG16 End2End", AB, "ffdm", "in-domain"),
    ModelRow("a-hospital", "infer-a-hospital", "VGG16 End2End", "film (A)", "hospital", "out-of-domain"),
    ModelRow("baseline", "infer-ab-hospital", "VGG16 Baseline", AB, "hospital", "out-of-domain"),
    ModelRow("baseline+radiomics", "radiomics", "VGG16 Baseline + Radiomic Analysis (RA)", AB, "hospital", "adapted"),
    ModelRow("finetune-config1", "finetune1-stage2", "Fine-tuning Config 1", AB, "hospital", "adapted"),
    ModelRow("finetune-config2", "finetune2-stage2", "Fine-tuning Config 2", AB, "hospital", "adapted"),
)
ROW = {row.key: row for row in ROWS}
TABLE9 = ("baseline", "baseline+radiomics", "finetune-config1", "finetune-config2")


@dataclass(frozen=True)
class ThesisTable:
    name: str  # file stem in tables/
    title: str
    rows: tuple[str, ...]


TABLES = (
    ThesisTable("table2_in_domain_ffdm", "Table 2. Baseline inference on ffdm (INbreast analogue, in-domain)",
                ("a-ffdm", "ab-ffdm")),
    ThesisTable("table3_in_domain_film", "Table 3. Baseline inference on film (CBIS-DDSM analogue, in-domain)",
                ("a-film", "ab-film")),
    ThesisTable("table4_out_of_domain", "Table 4. Baseline inference on hospital (out-of-domain)",
                ("a-hospital", "baseline")),
    ThesisTable("table5_radiomics", "Table 5. Impact of radiomic features on hospital", ("baseline+radiomics",)),
    ThesisTable("table8_finetune", "Table 8. Fine-tuning test results", ("finetune-config1", "finetune-config2")),
    ThesisTable("table9_comparison", "Table 9. Comparison before and after domain adaptation on hospital", TABLE9),
)  # fmt: skip

# (row, reference): the paired comparisons of the thesis' tables and its conclusions.
COMPARISONS = (
    ("finetune-config1", "baseline"),
    ("finetune-config2", "baseline"),
    ("baseline+radiomics", "baseline"),
    ("finetune-config2", "finetune-config1"),
    ("finetune-config1", "baseline+radiomics"),
    ("finetune-config2", "baseline+radiomics"),
    ("baseline", "a-hospital"),
    ("ab-ffdm", "a-ffdm"),
    ("ab-film", "a-film"),
)
# Section 6.1: each pretrained variant on its last training domain (in-domain) vs on the hospital.
DOMAIN_DROPS = (("ab-ffdm", "baseline"), ("a-film", "a-hospital"))
CHANGED_METRICS = ("auc", "sensitivity", "specificity", "accuracy")


def model_metrics(workdir: WorkDir) -> dict[str, dict[str, Any]]:
    """metrics.json fields of every row whose step finished, keyed by row."""
    found = {}
    for row in ROWS:
        values = workdir.metrics(row.folder)
        if values is not None:
            found[row.key] = {name: values[name] for name in METRIC_FIELDS}
    return found


def thesis_table(table: ThesisTable, found: dict[str, dict[str, Any]], workdir: WorkDir) -> pd.DataFrame:
    """One thesis table; a row whose step is missing stays, with its reason and no numbers."""
    records = []
    for key in table.rows:
        row, values = ROW[key], found.get(key)
        ci = values["auc_ci95"] if values else [math.nan, math.nan]
        records.append(
            {
                "row": key,
                "model": row.model,
                "pretrained_with": row.pretrained_with,
                "dataset": row.dataset,
                "status": "ok" if values else f"missing: {row.folder} {workdir.missing.get(row.folder, '')}".strip(),
                "level": values["level"] if values else "",
                "n": values["n"] if values else math.nan,
                "n_pos": values["n_pos"] if values else math.nan,
                "auc": _number(values, "auc"),
                "auc_ci95_low": _float(ci[0]),
                "auc_ci95_high": _float(ci[1]),
                "sensitivity": _number(values, "sensitivity"),
                "specificity": _number(values, "specificity"),
                "accuracy": _number(values, "accuracy"),
                "threshold": _number(values, "threshold"),
                "threshold_source": values["threshold_source"] if values else "",
                "source": row.folder,
            }
        )
    return pd.DataFrame.from_records(records)


def relative_changes(found: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Table 9 rows against the baseline, and Section 6.1's in-domain -> out-of-domain drop."""
    pairs = [("vs baseline", key, "baseline") for key in TABLE9[1:]]
    pairs += [("in-domain -> out-of-domain", out_key, in_key) for in_key, out_key in DOMAIN_DROPS]
    records = []
    for comparison, key, reference in pairs:
        if key not in found or reference not in found:
            continue
        for name in CHANGED_METRICS:
            new, old = _number(found[key], name), _number(found[reference], name)
            records.append(
                {
                    "comparison": comparison,
                    "row": key,
                    "reference": reference,
                    "metric": name,
                    "reference_value": old,
                    "value": new,
                    "difference": new - old,
                    "relative_change_pct": (new - old) / old * 100 if old else math.nan,
                }
            )
    columns = ["comparison", "row", "reference", "metric", "reference_value", "value", "difference",
               "relative_change_pct"]  # fmt: skip
    return pd.DataFrame.from_records(records, columns=columns)


def paired_tests(found: dict[str, dict[str, Any]], workdir: WorkDir) -> pd.DataFrame:
    """DeLong tests of each comparison on the test cases both models scored."""
    records = []
    for key, reference in COMPARISONS:
        if key not in found or reference not in found:
            continue
        a, b = workdir.scores(ROW[key].folder), workdir.scores(ROW[reference].folder)
        if a is None or b is None:
            continue
        level = "patient" if "patient" in (found[key]["level"], found[reference]["level"]) else "image"
        record: dict[str, Any] = {"row": key, "reference": reference, "level": level}
        try:
            paired = metrics.paired_test_scores(a, b, level=level, patient_rule=PATIENT_RULE)
        except (ValueError, KeyError) as error:  # e.g. an id scored twice, a missing id column
            records.append(record | {"note": f"not computable: {error_line(error)}"})
            continue
        y, note = paired.labels, paired.note
        record |= {"n": len(y), "n_pos": int(y.sum())}
        if y.all() or not y.any():
            record |= {"auc": math.nan, "auc_reference": math.nan, "difference": math.nan, "p_value": math.nan,
                       "note": (note + "; " if note else "") + "needs both classes among the shared test cases"}
        else:
            auc_a, auc_b, p = metrics.delong_test(y, paired.scores_a, paired.scores_b)
            record |= {"auc": auc_a, "auc_reference": auc_b, "difference": auc_a - auc_b, "p_value": p, "note": note}
        records.append(record)
    columns = ["row", "reference", "level", "n", "n_pos", "auc", "auc_reference", "difference", "p_value", "note"]
    return pd.DataFrame.from_records(records, columns=columns)


def patient_level_view(found: dict[str, dict[str, Any]], workdir: WorkDir, *, n_boot: int, seed: int) -> pd.DataFrame:
    """Table 9 at patient level for every row: the CNN rows collapsed by the max over views.

    The thesis compares image-level CNN rows with the patient-level radiomics row; this puts all four
    on the same unit (the patient) so that comparison is like for like.
    """
    records = []
    for key in TABLE9:
        if key not in found:
            continue
        scores = workdir.scores(ROW[key].folder)
        if scores is None:
            continue
        try:
            if found[key]["level"] == "patient":
                values = dict(found[key])
            else:
                frame = metrics.patient_scores(scores, how=PATIENT_RULE)
                values = metrics.evaluate(frame, level="patient", n_boot=n_boot, seed=seed)
            note = "from metrics.json" if found[key]["level"] == "patient" else f"{PATIENT_RULE} over views"
        except ValueError as error:
            records.append({"row": key, "note": f"not computable: {error}"})
            continue
        records.append(
            {
                "row": key,
                "model": ROW[key].model,
                "n": values["n"],
                "n_pos": values["n_pos"],
                "auc": values["auc"],
                "auc_ci95_low": values["auc_ci95"][0],
                "auc_ci95_high": values["auc_ci95"][1],
                "sensitivity": values["sensitivity"],
                "specificity": values["specificity"],
                "accuracy": values["accuracy"],
                "threshold": values["threshold"],
                "note": note,
            }
        )
    columns = ["row", "model", "n", "n_pos", "auc", "auc_ci95_low", "auc_ci95_high", "sensitivity", "specificity",
               "accuracy", "threshold", "note"]  # fmt: skip
    return pd.DataFrame.from_records(records, columns=columns)


def _number(values: dict[str, Any] | None, name: str) -> float:
    return _float(values[name]) if values else math.nan


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)
