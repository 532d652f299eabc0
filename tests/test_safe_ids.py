"""Ids that would become paths, and CSV cells a spreadsheet would run as formulas (issue 15, item 2)."""

from __future__ import annotations

import csv
import io

import pandas as pd
import pytest

from common.artifacts import atomic_write_csv
from common.cohort import CohortError, match_patient, read_cohort_csv
from jobs.cli import main

COHORT_HEADER = "patient_id,age,label,pair_id,cancer_laterality\n"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def files_under(root):
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("bad_id", ["../../escaped", "a/b", "..", ".hidden", "a\\b", "x" * 65, "=HYPERLINK(1)",
                                    "-1+2", "a b", "\u00e9t\u00e9"])
def test_cohort_refuses_ids_outside_the_safe_set(tmp_path, bad_id):
    path = tmp_path / "cohort.csv"
    pd.DataFrame({"patient_id": ["P1", bad_id], "age": [50, 51], "label": [0, 0], "pair_id": ["", ""],
                  "cancer_laterality": ["", ""]}).to_csv(path, index=False)
    with pytest.raises(CohortError, match="patient_id outside") as error:
        read_cohort_csv(path)
    assert "line 3" in str(error.value) and "\n" not in str(error.value)


def test_cohort_accepts_the_real_id_styles(tmp_path):
    ids = ["P_00173", "D1-0001", "hospital-0001", "20586908", "a.b_c-d", "x" * 64]
    path = tmp_path / "cohort.csv"
    path.write_text(COHORT_HEADER + "".join(f"{i},50,0,,\n" for i in ids))
    assert read_cohort_csv(path)["patient_id"].tolist() == ids


def test_unsafe_pair_id_is_refused(tmp_path):
    path = tmp_path / "cohort.csv"
    path.write_text(COHORT_HEADER + "P1,50,1,../p,L\nP2,50,0,../p,\n")
    with pytest.raises(CohortError, match="pair_id outside"):
        read_cohort_csv(path)


def test_dicom_patient_id_never_matches_an_unsafe_candidate():
    # Even a caller that skipped the cohort check cannot get a path-like id back from matching.
    assert match_patient(("../../escaped", "P_00001"), {"../../escaped", "P_00001"}) == "P_00001"
    assert match_patient(("a/b",), {"a/b"}) is None


@pytest.mark.parametrize("bad_id", ["../../escaped", "a/b"])
def test_path_like_id_writes_nothing_outside_out_and_exits_2(tmp_path, mg_dicom, capfd, bad_id):
    root = tmp_path / "site"
    data = root / "in"
    mg_dicom(data / "a.dcm", PatientID=bad_id, ImageLaterality="L", ViewPosition="CC")
    mg_dicom(data / "b.dcm", PatientID="P1", ImageLaterality="L", ViewPosition="CC", seed=1)
    cohort = root / "cohort.csv"
    pd.DataFrame({"patient_id": [bad_id, "P1"], "age": [50, 50], "label": [0, 0], "pair_id": ["", ""],
                  "cancer_laterality": ["", ""]}).to_csv(cohort, index=False)
    out = root / "work" / "deep" / "out"
    before = files_under(tmp_path)
    code = main(["preprocess", "--input", str(data), "--cohort", str(cohort), "--out", str(out), "--profile", "ci",
                 "--workers", "1"])
    err = capfd.readouterr().err
    assert code == 2
    assert "patient_id outside" in err and "Traceback" not in err
    created = files_under(tmp_path) - before
    own_lock = out.parent / f".{out.name}.lock"  # the step folder's lock lives beside it (common.workfolder)
    assert all(out in p.parents or p in (out, own_lock) or p in out.parents for p in created), created
    assert not list(tmp_path.rglob("*.png"))


def test_every_csv_cell_that_starts_a_formula_is_neutralised(tmp_path):
    frame = pd.DataFrame({
        "text": ['=HYPERLINK("http://evil","x")', "+1+1", "-2+3+cmd|' /C calc'!A0", "@SUM(A1)", "\tx", "\rx",
                 "plain", "-0.5"],
        "number": [-0.5, 1.0, -2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
    })
    atomic_write_csv(tmp_path / "t.csv", frame)
    rows = list(csv.reader(io.StringIO((tmp_path / "t.csv").read_bytes().decode(), newline="")))
    header, body = rows[0], rows[1:]
    assert header == ["text", "number"]
    texts = [row[0] for row in body]
    assert all(not cell.startswith(FORMULA_STARTS) for cell in texts[:6]), texts
    assert texts[:6] == ["'" + value.replace("\r", "\n") for value in frame["text"][:6]]
    assert texts[6:] == ["plain", "-0.5"]  # a negative number is data, not a formula
    assert [float(row[1]) for row in body] == frame["number"].tolist()


def test_a_formula_file_name_reaches_rejected_csv_neutralised(tmp_path, mg_dicom):
    data = tmp_path / "in"
    mg_dicom(data / "a.dcm", PatientID="P1", ImageLaterality="L", ViewPosition="CC")
    (data / '=HYPERLINK("evil.example","y").dcm').write_text("not a dicom")
    cohort = tmp_path / "cohort.csv"
    cohort.write_text(COHORT_HEADER + "P1,50,0,,\n")
    out = tmp_path / "out"
    assert main(["preprocess", "--input", str(data), "--cohort", str(cohort), "--out", str(out),
                 "--profile", "ci", "--workers", "1"]) == 0
    for name in ("rejected.csv", "images.csv"):
        for row in csv.reader(io.StringIO((out / name).read_bytes().decode(), newline="")):
            assert not any(cell.startswith(FORMULA_STARTS[:4]) for cell in row), (name, row)
    assert pd.read_csv(out / "rejected.csv")["file"].tolist() == ['\'=HYPERLINK("evil.example","y").dcm']
