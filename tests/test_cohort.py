"""cohort.csv validation and the image-level rules (label, four views, patient matching)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.artifacts import UnusableInput
from common.cohort import CohortError, flag_four_views, image_label, match_patient, read_cohort_csv

HEADER = "patient_id,age,label,pair_id,cancer_laterality\n"


def write(tmp_path, text: str):
    path = tmp_path / "cohort.csv"
    path.write_text(text)
    return path


def test_valid_cohort_is_typed(tmp_path):
    cohort = read_cohort_csv(write(tmp_path, HEADER + "A1, 55,1,p1,l\nB2,54.5,0,p1,\n007,,0,,\n"))
    assert list(cohort["patient_id"]) == ["A1", "B2", "007"]  # ids stay strings (leading zeros kept)
    assert cohort["age"].iloc[0] == 55 and cohort["age"].iloc[1] == 54.5 and np.isnan(cohort["age"].iloc[2])
    assert list(cohort["label"]) == [1, 0, 0] and cohort["label"].dtype.kind == "i"
    assert list(cohort["cancer_laterality"]) == ["L", "", ""]
    assert list(cohort["pair_id"]) == ["p1", "p1", ""]


def test_pair_id_is_optional(tmp_path):
    cohort = read_cohort_csv(write(tmp_path, "patient_id,age,label,cancer_laterality\nA,60,1,B\n"))
    assert list(cohort["pair_id"]) == [""]


def test_missing_columns_are_named(tmp_path):
    with pytest.raises(CohortError, match="missing columns: age, cancer_laterality"):
        read_cohort_csv(write(tmp_path, "patient_id,label\nA,1\n"))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("A,abc,0,,\n", "age not a number in 1..120: line 2 ('abc')"),
        ("A,-3,0,,\n", "age not a number"),
        ("A,200,0,,\n", "age not a number"),
        ("A,50,2,,\n", "label not 0/1: line 2 ('2')"),
        ("A,50,yes,,\n", "label not 0/1"),
        ("A,50,1,,X\n", "cancer_laterality not L/R/B/empty: line 2 ('X')"),
        ("A,50,1,,\n", "case (label 1) without cancer_laterality: line 2"),
        ("A,50,0,,R\n", "control (label 0) with a cancer_laterality"),
        ("A,50,0,,\nB,51,0,,\nA,52,0,,\n", "duplicate patient_id: line 2 ('A'), line 4 ('A')"),
        (",50,0,,\n", "empty patient_id: line 2"),
    ],
)
def test_bad_rows_are_reported_with_line_numbers(tmp_path, rows, message):
    with pytest.raises(CohortError) as error:
        read_cohort_csv(write(tmp_path, HEADER + rows))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_all_problems_in_one_line_and_cli_exit_2_type(tmp_path):
    with pytest.raises(UnusableInput) as error:  # CohortError is an UnusableInput: the CLI exits 2
        read_cohort_csv(write(tmp_path, HEADER + "A,abc,0,,\nB,50,3,,\n"))
    assert "age not a number" in str(error.value) and "label not 0/1" in str(error.value)


def test_unreadable_or_empty_cohort(tmp_path):
    with pytest.raises(CohortError, match="file not found"):
        read_cohort_csv(tmp_path / "nope.csv")
    with pytest.raises(CohortError, match="no patients"):
        read_cohort_csv(write(tmp_path, HEADER))


def test_image_label_rule():
    # positive exactly when the patient is a case and the image shows the cancer's breast (B = both)
    expected = {
        (1, "L", "L"): 1, (1, "L", "R"): 0, (1, "R", "R"): 1, (1, "R", "L"): 0,
        (1, "B", "L"): 1, (1, "B", "R"): 1, (0, "", "L"): 0, (0, "", "R"): 0,
    }
    for (label, side, laterality), value in expected.items():
        assert image_label(label, side, laterality) == value


def test_four_views_flag():
    images = pd.DataFrame(
        [("A", "L", "CC"), ("A", "R", "CC"), ("A", "L", "MLO"), ("A", "R", "MLO"),
         ("B", "L", "CC"), ("B", "L", "MLO"), ("B", "R", "CC")],
        columns=["patient_id", "laterality", "view"],
    )
    assert list(flag_four_views(images)) == [True] * 4 + [False] * 3


def test_match_patient_prefers_exact_patient_id():
    known = {"P_00173", "Mass-Test_P_00173_LEFT_CC", "H1"}
    assert match_patient(("Mass-Test_P_00173_LEFT_CC", "P_00173"), known) == "Mass-Test_P_00173_LEFT_CC"
    assert match_patient(("Mass-Test_P_00999_LEFT_CC", "P_00999"), known) is None
    assert match_patient(("H1",), known) == "H1"
    assert match_patient(("", None), known) is None
