"""The pipeline definition (common.pipeline): task names, modes, dependencies, and command lines that the
real `mammo` argument parser accepts."""

from __future__ import annotations

import pytest

from common import steps
from common.pipeline import Out, tasks
from common.profile import load_profile
from common.retrain_dag import retrain_tasks
from jobs.cli import build_parser

# docs/contracts.md, "Work directory layout".
CONTRACT_LAYOUT = {
    "synth-film", "synth-ffdm", "synth-hospital",
    "preprocess-film", "preprocess-ffdm", "preprocess-hospital",
    "split-film", "split-ffdm", "split-hospital",
    "pretrain-a", "pretrain-ab",
    "infer-a-film", "infer-a-ffdm", "infer-a-hospital", "infer-ab-film", "infer-ab-ffdm", "infer-ab-hospital",
    "finetune1-stage1", "finetune1-stage2", "finetune2-stage1", "finetune2-stage2",
    "radiomics", "report",
}
REAL = {"hospital_dicom": "/data/dicom", "hospital_cohort": "/data/cohort.csv", "checkpoint": "/ckpt/inbreast.h5"}


@pytest.fixture(scope="module")
def parser():
    return build_parser()


def all_plans():
    yield "synthetic", tasks("synthetic", "ci")
    yield "real+checkpoint", tasks("real", "ci", REAL)
    yield "real+sources", tasks("real", "ci", {"hospital_dicom": "/h", "hospital_cohort": "/h.csv",
                                               "film_dicom": "/f", "film_cohort": "/f.csv",
                                               "ffdm_dicom": "/d", "ffdm_cohort": "/d.csv"})
    yield "real+model", tasks("real", "ci", {"hospital_dicom": "/h", "hospital_cohort": "/h.csv", "model": "/m"})


def test_synthetic_mode_has_exactly_the_contract_layout():
    plan = tasks("synthetic", "demo")
    assert [t.name for t in plan if t.name in CONTRACT_LAYOUT] == [t.name for t in plan]
    assert {t.name for t in plan} == CONTRACT_LAYOUT


@pytest.mark.parametrize("label,plan", list(all_plans()), ids=[label for label, _ in all_plans()])
def test_every_command_line_parses_with_the_real_cli(parser, label, plan):
    workdir = "/w"
    for task in plan:
        args = parser.parse_args(task.argv(workdir))
        assert args.step == task.step and args.out == f"{workdir}/{task.name}"
        module = args._module
        # Every folder input points into an upstream task's folder or at an external input.
        for name in getattr(module, "INPUT_ARGS", ()):
            value = getattr(args, name, None)
            if value is None or name == "workdir":
                continue
            inside = [d for d in task.depends if str(value) == f"{workdir}/{d}" or str(value).startswith(
                f"{workdir}/{d}/")]
            assert inside or not str(value).startswith(workdir), f"{task.name} --{name} {value}"


@pytest.mark.parametrize("label,plan", list(all_plans()), ids=[label for label, _ in all_plans()])
def test_order_is_topological_and_dependencies_follow_the_arguments(label, plan):
    position = {task.name: i for i, task in enumerate(plan)}
    assert len(position) == len(plan)
    for task in plan:
        assert all(position[d] < position[task.name] for d in task.depends), task.name
        referenced = {value.task for _, value in task.args if isinstance(value, Out)}
        assert referenced <= set(task.depends)
    report = plan[-1]
    assert report.name == "report" and set(report.depends) == {t.name for t in plan[:-1] if t.step != "synth"}


def test_real_mode_with_a_checkpoint_has_no_synthetic_or_pretraining_tasks():
    plan = {t.name: t for t in tasks("real", "demo", REAL)}
    assert set(plan) == {"preprocess-hospital", "split-hospital", "infer-ab-hospital", "finetune1-stage1",
                         "finetune1-stage2", "finetune2-stage1", "finetune2-stage2", "radiomics", "report"}
    argv = plan["infer-ab-hospital"].argv("/w")
    assert argv[argv.index("--checkpoint") + 1] == "/ckpt/inbreast.h5"
    assert argv[argv.index("--checkpoint-mean") + 1] == "44.33"
    assert plan["preprocess-hospital"].argv("/w")[1:5] == ["--input", "/data/dicom", "--cohort", "/data/cohort.csv"]


def test_real_mode_source_data_adds_in_domain_rows():
    plan = {t.name for t in tasks("real", "ci", {**REAL, "film_dicom": "/f", "film_cohort": "/f.csv"})}
    assert {"preprocess-film", "split-film", "infer-ab-film"} <= plan
    assert not any(name.startswith(("synth", "pretrain", "infer-a-")) for name in plan)


def test_real_mode_without_a_baseline_is_refused():
    with pytest.raises(ValueError, match="needs a baseline"):
        tasks("real", "ci", {"hospital_dicom": "/h", "hospital_cohort": "/h.csv", "film_dicom": "/f",
                             "film_cohort": "/f.csv"})
    with pytest.raises(ValueError, match="hospital_dicom"):
        tasks("real", "ci", {"checkpoint": "/c.h5"})
    with pytest.raises(ValueError, match="not both"):
        tasks("real", "ci", {**REAL, "model": "/m"})
    with pytest.raises(ValueError, match="unknown mode"):
        tasks("demo", "ci")


def test_finetune_configurations_select_tasks():
    names = {t.name for t in tasks("synthetic", "ci", {"finetune_configs": [2]})}
    assert {"finetune2-stage1", "finetune2-stage2"} <= names and not any(n.startswith("finetune1") for n in names)
    with pytest.raises(ValueError):
        tasks("synthetic", "ci", {"finetune_configs": [3]})


def test_profile_values_and_s3_workdirs():
    plan = {t.name: t for t in tasks("synthetic", "ci")}
    argv = plan["synth-film"].argv("s3://bucket/run/")
    assert argv[argv.index("--patients") + 1] == str(load_profile("ci").synth.patients["film"])
    assert argv[argv.index("--out") + 1] == "s3://bucket/run/synth-film"
    preprocess = plan["preprocess-film"].argv("s3://bucket/run")
    assert preprocess[preprocess.index("--input") + 1] == "s3://bucket/run/synth-film/dicom"


def test_gpu_steps_are_the_model_steps():
    assert set(steps.gpu_steps()) == {"pretrain", "baseline-infer", "finetune-stage1", "finetune-stage2"}
    from_datasets = {"hospital_dataset": "vindr-mammo", "hospital_metadata_0": "m.csv", "hospital_dicom": "d",
                     "checkpoint": "c.h5"}
    used = {t.step for t in tasks("synthetic", "ci")} | {t.step for t in tasks("real", "ci", from_datasets)} \
        | {t.step for t in retrain_tasks("ci")}
    assert {s.name for s in steps.task_steps()} == used


def test_source_domains_from_public_datasets_become_cohort_tasks():
    params = {"film_dataset": "cbis-ddsm", "film_metadata_0": "mass.csv", "film_metadata_1": "calc.csv",
              "film_dicom": "/data/CBIS-DDSM", "ffdm_dataset": "inbreast", "ffdm_metadata_0": "INbreast.xls",
              "ffdm_dicom": "/data/INbreast", "hospital_dicom": "/h", "hospital_cohort": "/h/cohort.csv"}
    plan = {t.name: t for t in tasks("real", "ci", params)}
    assert plan["cohort-film"].argv("/w")[:6] == ["cohort", "cbis-ddsm", "--metadata", "mass.csv", "--metadata",
                                                  "calc.csv"]
    preprocess = plan["preprocess-film"].argv("/w")
    assert preprocess[preprocess.index("--image-table") + 1] == "/w/cohort-film/image_table.csv"
    assert preprocess[preprocess.index("--cohort") + 1] == "/w/cohort-film/cohort.csv"
    # CBIS-DDSM has an official split (kept), INbreast none, and the hospital's own cohort is split as before.
    assert "--fixed" in plan["split-film"].argv("/w") and "--fixed" not in plan["split-ffdm"].argv("/w")
    assert "--fixed" not in plan["split-hospital"].argv("/w") and "--image-table" not in plan[
        "preprocess-hospital"].argv("/w")
    assert {"pretrain-a", "pretrain-ab", "infer-a-film", "infer-ab-ffdm"} <= set(plan)
