"""The hospital's cohort file and the rules that tie images to it.

cohort.csv (docs/contracts.md): patient_id, age, label (1 case / 0 control), pair_id (optional),
cancer_laterality (L, R, B or empty), split (optional: a dataset's official subset, train, validation, test
or empty; `mammo split --fixed` keeps it). A cohort that breaks the contract is refused as a whole, with every
problem named in one line, because a silently dropped or mislabelled patient would bias every metric
downstream. Age may be left empty; the preprocess step then falls back to the DICOM PatientAge.

Image label rule (thesis: 382 positive of 1,528 images = both views of the affected breast): an image is
positive when its patient is a case and its laterality is the cancer's (B = both breasts).

Ids become file names (images/<patient_id>_L_CC.png), so patient_id and pair_id must be safe ids: 1 to 64
characters from A-Z a-z 0-9 . _ -, starting with a letter or digit. That excludes path separators, `..`,
hidden names and spreadsheet formula starts; a cohort with any other id is refused, naming the lines.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from common.artifacts import UnusableInput, error_line
from common.constants import SPLITS

REQUIRED_COLUMNS = ("patient_id", "age", "label", "cancer_laterality")
OFFICIAL_SUBSETS = (*SPLITS, "")
LATERALITIES = ("L", "R", "B", "")
MIN_AGE, MAX_AGE = 1, 120
FOUR_VIEWS = frozenset({("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO")})
MAX_EXAMPLES = 5
MAX_ID_LENGTH = 64
SAFE_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_ID_LENGTH - 1}}}")
SAFE_ID_RULE = f"1-{MAX_ID_LENGTH} of A-Z a-z 0-9 . _ -, starting with a letter or digit"


class CohortError(UnusableInput):
    """cohort.csv breaks the contract; the message lists the problems in one line."""


def read_cohort_csv(path: str | Path) -> pd.DataFrame:
    """Read and validate cohort.csv; returns one row per patient with typed columns, indexed by nothing.

    Columns out: patient_id (str), age (float, NaN when empty), label (int 0/1), pair_id (str, '' when
    absent), cancer_laterality (str in L/R/B/''), split (str in train/validation/test/'', '' when absent).
    """
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig")
    except FileNotFoundError:
        raise CohortError(f"{path}: file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CohortError(f"{path}: not a readable CSV ({error_line(error)})") from None
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise CohortError(f"{path}: missing columns: {', '.join(missing)} (need {', '.join(REQUIRED_COLUMNS)})")
    if raw.empty:
        raise CohortError(f"{path}: no patients")
    cohort = pd.DataFrame({"patient_id": raw["patient_id"].str.strip()})
    age_text = raw["age"].str.strip()
    cohort["age"] = pd.to_numeric(age_text, errors="coerce").astype(float)
    cohort["label"] = raw["label"].str.strip()
    cohort["pair_id"] = raw["pair_id"].str.strip() if "pair_id" in raw.columns else ""
    cohort["cancer_laterality"] = raw["cancer_laterality"].str.strip().str.upper()
    cohort["split"] = raw["split"].str.strip().str.lower() if "split" in raw.columns else ""

    row = pd.Series(np.arange(len(raw)) + 2, index=raw.index)  # CSV line numbers (header is line 1)
    problems: list[str] = []
    _collect(problems, "empty patient_id", row[cohort["patient_id"] == ""])
    duplicated = cohort["patient_id"].duplicated(keep=False) & (cohort["patient_id"] != "")
    _collect(problems, "duplicate patient_id", row[duplicated], cohort["patient_id"][duplicated])
    for column in ("patient_id", "pair_id"):
        unsafe = (cohort[column] != "") & ~cohort[column].map(is_safe_id)
        _collect(problems, f"{column} outside the safe set ({SAFE_ID_RULE})", row[unsafe], cohort[column][unsafe])
    bad_age = (age_text != "") & ~cohort["age"].between(MIN_AGE, MAX_AGE)
    _collect(problems, f"age not a number in {MIN_AGE}..{MAX_AGE}", row[bad_age], age_text[bad_age])
    bad_label = ~cohort["label"].isin(["0", "1"])
    _collect(problems, "label not 0/1", row[bad_label], cohort["label"][bad_label])
    bad_side = ~cohort["cancer_laterality"].isin(LATERALITIES)
    _collect(problems, "cancer_laterality not L/R/B/empty", row[bad_side], cohort["cancer_laterality"][bad_side])
    case_without_side = (cohort["label"] == "1") & (cohort["cancer_laterality"] == "")
    _collect(problems, "case (label 1) without cancer_laterality", row[case_without_side])
    control_with_side = (cohort["label"] == "0") & cohort["cancer_laterality"].isin(["L", "R", "B"])
    _collect(problems, "control (label 0) with a cancer_laterality", row[control_with_side])
    bad_split = ~cohort["split"].isin(OFFICIAL_SUBSETS)
    _collect(problems, "split not train/validation/test/empty", row[bad_split], cohort["split"][bad_split])
    _check_pairs(problems, cohort, row)
    if problems:
        raise CohortError(f"{path}: " + "; ".join(problems))
    cohort["label"] = cohort["label"].astype(int)
    return cohort.reset_index(drop=True)


def _check_pairs(problems: list[str], cohort: pd.DataFrame, row: pd.Series) -> None:
    """A matched pair is one case and one control; one member alone is allowed (its partner left the cohort)."""
    paired = cohort[cohort["pair_id"] != ""]
    groups = paired.groupby("pair_id", sort=False)["label"]
    size, cases = groups.transform("size"), groups.transform(lambda labels: (labels == "1").sum())
    first = ~paired["pair_id"].duplicated()  # name each bad pair once, at its first line
    for what, bad in (("more than two patients", size > 2), ("two cases", (size == 2) & (cases == 2)),
                      ("two controls", (size == 2) & (cases == 0))):
        _collect(problems, f"pair_id with {what}", row[paired.index][bad & first], paired["pair_id"][bad & first])


def _collect(problems: list[str], what: str, lines: pd.Series, values: pd.Series | None = None) -> None:
    if lines.empty:
        return
    shown = [
        f"line {line}" + ("" if values is None else f" ({values[index]!r})")
        for index, line in list(lines.items())[:MAX_EXAMPLES]
    ]
    more = f" and {len(lines) - MAX_EXAMPLES} more" if len(lines) > MAX_EXAMPLES else ""
    problems.append(f"{what}: {', '.join(shown)}{more}")


def is_safe_id(value: str) -> bool:
    """True for an id that can be part of a file name as it is (see the module docstring)."""
    return SAFE_ID.fullmatch(value) is not None


def match_patient(candidates: tuple[str, ...] | list[str], known_ids: set[str] | frozenset[str]) -> str | None:
    """The first candidate id (PatientID, then ids derived from it or the path) that the cohort knows.

    A DICOM PatientID is outside data: only a safe id is ever returned, whatever `known_ids` holds.
    """
    return next((c for c in candidates if c and c in known_ids and is_safe_id(c)), None)


def image_label(patient_label: int, cancer_laterality: str, laterality: str) -> int:
    """1 for the views of a case's affected breast (B = both), else 0."""
    return int(patient_label == 1 and cancer_laterality in (laterality, "B"))


def flag_four_views(images: pd.DataFrame) -> pd.Series:
    """True for every image of a patient who has all of LCC, RCC, LMLO and RMLO (patient vectors need four)."""
    views = images.groupby("patient_id")[["laterality", "view"]].apply(
        lambda group: FOUR_VIEWS <= set(zip(group["laterality"], group["view"], strict=True))
    )
    return images["patient_id"].map(views).astype(bool)
