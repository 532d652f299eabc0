"""Smaller input checks of issue 15, item 7: a damaged model in a finished folder, impossible pairs."""

from __future__ import annotations

import pytest

from common.artifacts import step_output
from common.cohort import CohortError, read_cohort_csv
from jobs.cli import main

COHORT_HEADER = "patient_id,age,label,pair_id,cancer_laterality\n"


def test_truncated_model_in_a_finished_folder_is_one_line_exit_2(tmp_path, capfd):
    from common import model_folder
    from common.model import Architecture, build_end2end
    from common.profile import load_profile

    arch = Architecture.from_profile(load_profile("ci"))
    folder = tmp_path / "pretrain-a"
    with step_output("pretrain", folder, {}):
        model_folder.write(folder, build_end2end(arch, dropout=0.0, weight_decay=0.0),
                           model_folder.Preprocessing(50.0, arch.height, arch.width, "test"))
    model = folder / "model.keras"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    code = main(["baseline-infer", "--model", str(folder), "--images", str(tmp_path / "images"),
                 "--split", str(tmp_path / "split"), "--out", str(tmp_path / "out"), "--profile", "ci"])
    err = capfd.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    [message] = [line for line in err.splitlines() if line.startswith("mammo baseline-infer: ") and
                 not line.endswith("s")]
    assert f"{model}: cannot load the model" in message and "truncated" in message


@pytest.mark.parametrize(("rows", "problem"), [
    ("P1,50,1,x,L\nP2,50,0,x,\nP3,51,0,x,\n", "pair_id with more than two patients: line 2 ('x')"),
    ("P1,50,1,x,L\nP2,50,1,x,R\n", "pair_id with two cases: line 2 ('x')"),
    ("P1,50,0,x,\nP2,50,0,x,\n", "pair_id with two controls: line 2 ('x')"),
])
def test_a_pair_is_one_case_and_one_control(tmp_path, rows, problem):
    path = tmp_path / "cohort.csv"
    path.write_text(COHORT_HEADER + rows)
    with pytest.raises(CohortError) as error:
        read_cohort_csv(path)
    assert problem in str(error.value)


def test_valid_pairs_and_a_pair_missing_its_partner_are_accepted(tmp_path):
    # a partner may be missing (withdrawn, or without images in a grown cohort): the pair is then one patient
    path = tmp_path / "cohort.csv"
    path.write_text(COHORT_HEADER + "P1,50,1,x,L\nP2,50,0,x,\nP3,60,1,y,R\nP4,61,0,,\n")
    assert read_cohort_csv(path)["pair_id"].tolist() == ["x", "x", "y", ""]
