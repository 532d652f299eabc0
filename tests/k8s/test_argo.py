"""argo/*.yaml: up to date with the pipeline definition, valid for Hera's Argo 4.x models without unknown
fields, and semantically sound (DAG, artifacts, parameters, command lines)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import hera.workflows as hera
import pytest
import yaml
from argo_checks import KINDS, semantic_problems, unknown_fields, workflow_spec

from common import argo_render
from common.pipeline import tasks
from jobs.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
HERA_CLASSES = {"Workflow": hera.Workflow, "WorkflowTemplate": hera.WorkflowTemplate,
                "CronWorkflow": hera.CronWorkflow}
CARD_STEPS = {"preprocess", "split", "baseline-infer", "finetune-stage1", "finetune-stage2", "radiomics", "report"}


@pytest.fixture(scope="module")
def parser():
    return build_parser()


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "argo" / name).read_text())


@pytest.mark.parametrize("name", sorted(argo_render.RENDERINGS))
def test_committed_yaml_is_the_rendering(name):
    expected = argo_render.render_text(name)
    assert (ROOT / "argo" / name).read_text() == expected, f"argo/{name} is stale: run `make argo`"
    if name in argo_render.INSTALLED:
        assert (ROOT / "manifests/base/argo" / name).read_text() == expected, "manifests/base copy is stale"


@pytest.mark.parametrize("name", sorted(argo_render.RENDERINGS))
def test_hera_round_trip_and_no_unknown_fields(name):
    obj = load(name)
    model = KINDS[obj["kind"]]
    assert model.model_validate(obj).model_dump(by_alias=True, exclude_none=True, mode="json") == obj
    assert HERA_CLASSES[obj["kind"]].from_dict(copy.deepcopy(obj)).to_dict() == obj
    assert unknown_fields(model, obj) == []


def test_the_unknown_field_check_can_fail():
    obj = load("full-pipeline.yaml")
    obj["spec"]["templates"][3]["container"]["imagePullPolcy"] = "Always"
    obj["spec"]["podGc"] = {"strategy": "OnPodSuccess"}
    problems = unknown_fields(KINDS["Workflow"], obj)
    assert any("imagePullPolcy" in p for p in problems) and any("podGc" in p for p in problems)


@pytest.mark.parametrize("name", sorted(argo_render.RENDERINGS))
def test_semantics(parser, name):
    assert semantic_problems(load(name), parser) == []


def test_the_semantic_check_can_fail(parser):
    obj = load("full-pipeline.yaml")
    templates = {t["name"]: t for t in obj["spec"]["templates"]}
    dag = templates["synthetic"]["dag"]["tasks"]
    by_name = {t["name"]: t for t in dag}
    by_name["split-film"]["depends"] = "report"  # cycle: report reads split-film
    by_name["radiomics"]["arguments"]["artifacts"][0]["from"] = "{{tasks.synth-film.outputs.artifacts.model}}"
    templates["report"]["container"]["args"].append("--no-such-option")
    templates["split-film"]["container"]["args"][-1] = "{{workflow.parameters.profiel}}"
    problems = "\n".join(semantic_problems(obj, parser))
    for expected in ("cycle", "undeclared output model of synth-film", "does not parse", "undeclared parameter"):
        assert expected in problems


def test_full_pipeline_has_the_card_steps_with_gpus_and_s3_artifacts():
    spec = load("full-pipeline.yaml")["spec"]
    templates = {t["name"]: t for t in spec["templates"]}
    for mode in ("synthetic", "real"):
        steps = {templates[t["template"]]["container"]["args"][0] for t in templates[mode]["dag"]["tasks"]}
        assert CARD_STEPS <= steps, mode
    sharded = {f"{t.name}-{part}" for t in tasks("synthetic", "ci") if t.step in ("preprocess", "radiomics")
               for part in ("plan", "shard")}
    expected = {t.name for t in tasks("synthetic", "ci")} | sharded
    assert {t["name"] for t in templates["synthetic"]["dag"]["tasks"]} == expected
    gpu = [t for t in templates.values() if "container" in t
           and "nvidia.com/gpu" in t["container"].get("resources", {}).get("limits", {})]
    assert {t["container"]["args"][0] for t in gpu} == {"pretrain", "baseline-infer", "finetune-stage1",
                                                         "finetune-stage2"}
    assert spec["artifactRepositoryRef"] == {"configMap": "artifact-repositories", "key": "default-v1"}
    assert spec["podGC"]["strategy"] == "OnPodSuccess" and spec["ttlStrategy"]["secondsAfterSuccess"] > 0
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["serviceAccountName"] == "mammo-workflow"
    assert spec["onExit"] == "record-outcome" and spec["activeDeadlineSeconds"] > 0
    params = {p["name"] for p in spec["arguments"]["parameters"]}
    assert {"mode", "profile", "gpu", "hospital-dicom", "hospital-cohort", "checkpoint", "finetune-config1",
            "finetune-config2"} <= params


def test_cpu_switch_patch_is_json_and_survives_argo_templating():
    patch = json.loads(argo_render.CPU_PATCH)
    assert patch["nodeSelector"] is None
    assert patch["containers"][0] == {"name": "main", "resources": {"requests": {"cpu": argo_render.CPU_FALLBACK_CPU},
                                                                   "limits": {"nvidia.com/gpu": None}}}
    assert "}}" not in argo_render.CPU_PATCH  # Argo's template tag would end there


def test_cron_workflow_is_argo_4():
    cron = load("retrain-cron.yaml")
    assert cron["kind"] == "CronWorkflow" and "schedule" not in cron["spec"]
    assert cron["spec"]["schedules"] and cron["spec"]["concurrencyPolicy"] == "Forbid"
    for template in workflow_spec(cron)["templates"]:
        if template.get("container", {}).get("command") != ["mammo"]:
            continue
        env = {e["name"]: e for e in template["container"]["env"]}
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "mammo-s3"
        assert "value" not in env["AWS_SECRET_ACCESS_KEY"]


def test_retraining_is_a_dag_of_the_pipeline_step_templates():
    """discover -> preprocess the new studies (sharded) -> data -> split (locked) -> fine-tune -> score both -> gate,
    with the full pipeline's templates for the shared steps (same image, resources, retries, GPU handling)."""
    spec = workflow_spec(load("retrain-cron.yaml"))
    templates = {t["name"]: t for t in spec["templates"]}
    dag = {t["name"]: t for t in templates[spec["entrypoint"]]["dag"]["tasks"]}
    steps = {name: templates[t["template"]]["container"]["args"][0] for name, t in dag.items()}
    assert steps == {"discover": "retrain-discover", "preprocess-new-plan": "shard-plan",
                     "preprocess-new-shard": "preprocess", "preprocess-new": "preprocess",
                     "training-data": "retrain-data", "split-hospital": "split",
                     "challenger-stage1": "finetune-stage1", "challenger": "finetune-stage2",
                     "score-champion": "baseline-infer", "score-challenger": "baseline-infer",
                     "gate": "retrain-gate"}
    assert all(t["when"] == "{{tasks.discover.outputs.parameters.proceed}} == true"
               for name, t in dag.items() if name != "discover")
    assert "challenger" in dag["gate"]["depends"] and "score-champion" in dag["gate"]["depends"]
    split_args = templates[dag["split-hospital"]["template"]]["container"]["args"]
    assert split_args[split_args.index("--previous") + 1] == "/work/discover/previous/split/split.csv"
    pipeline = {t["name"]: t for t in load("full-pipeline.yaml")["spec"]["templates"]}
    for name, step in (("challenger", "finetune2-stage2"), ("split-hospital", "split-hospital")):
        mine, theirs = templates[dag[name]["template"]], pipeline[step]
        for key in ("retryStrategy", "activeDeadlineSeconds", "nodeSelector", "tolerations", "podSpecPatch"):
            assert mine.get(key) == theirs.get(key), (name, key)
        assert mine["container"]["image"] == theirs["container"]["image"]
        assert mine["container"]["resources"] == theirs["container"]["resources"]
    discover = templates[dag["discover"]["template"]]
    assert "{{workflow.name}}" in discover["container"]["args"]
    assert discover["outputs"]["parameters"][0]["valueFrom"]["path"] == "/work/discover/proceed.txt"


def test_template_and_workflow_share_one_spec():
    assert load("full-pipeline.yaml")["spec"] == load("full-pipeline-template.yaml")["spec"]


def test_training_steps_take_the_gpu_count_from_a_parameter():
    spec = load("full-pipeline.yaml")["spec"]
    limits = {t["container"]["args"][0]: t["container"]["resources"]["limits"].get("nvidia.com/gpu")
              for t in spec["templates"] if "container" in t and t["container"].get("command") == ["mammo"]}
    assert {limits[s] for s in ("pretrain", "finetune-stage1", "finetune-stage2")} == {"{{workflow.parameters.gpus}}"}
    assert limits["baseline-infer"] == "1"
    assert {p["name"]: p["value"] for p in spec["arguments"]["parameters"]}["gpus"] == "1"


@pytest.mark.parametrize("mode", ["synthetic", "real"])
def test_preprocess_and_radiomics_fan_out_over_a_shard_plan_and_merge(mode):
    spec = load("full-pipeline.yaml")["spec"]
    templates = {t["name"]: t for t in spec["templates"]}
    dag = {t["name"]: t for t in templates[mode]["dag"]["tasks"]}
    sharded = [name for name in dag if name.startswith("preprocess-") and not name.endswith(("-plan", "-shard"))]
    for name in [*sharded, "radiomics"]:
        plan, shard, merge = dag[f"{name}-plan"], dag[f"{name}-shard"], dag[name]
        plan_template = templates[plan["template"]]
        assert plan_template["container"]["args"][:3] == ["shard-plan", "--step", name.split("-")[0]]
        assert plan_template["outputs"]["parameters"][0]["valueFrom"]["path"] == "/tmp/plan.json"
        assert shard["withParam"] == f"{{{{tasks.{name}-plan.outputs.parameters.shards}}}}"
        assert f"{name}-plan" in shard["depends"] and f"{name}-shard" in merge["depends"]
        shard_args = templates[shard["template"]]["container"]["args"]
        assert shard_args[-2:] == ["--shard", "{{inputs.parameters.index}}/{{inputs.parameters.count}}"]
        shard_key = templates[shard["template"]]["outputs"]["artifacts"][0]["s3"]["key"]
        assert shard_key == f"{{{{workflow.name}}}}/{name}.shards/{{{{inputs.parameters.index}}}}/"
        merge_template = templates[merge["template"]]
        args = merge_template["container"]["args"]
        assert args[args.index("--merge-shards") + 1] == f"/work/{name}.shards"
        assert "--input" not in args  # the merge never downloads the DICOMs again
        inputs = {a["name"]: a for a in merge_template["inputs"]["artifacts"]}
        assert inputs["shards"]["s3"]["key"] == f"{{{{workflow.name}}}}/{name}.shards/"
        assert merge_template["outputs"]["artifacts"][0]["path"] == f"/work/{name}"  # downstream sees one folder
    assert {p["name"]: p["value"] for p in spec["arguments"]["parameters"]}["shards"] == "4"


# Every cron template that runs a pipeline step -> the full pipeline's template of the same step.
SHARED_TEMPLATES = {"preprocess-new": "preprocess-hospital", "preprocess-new-plan": "preprocess-hospital-plan",
                    "preprocess-new-shard": "preprocess-hospital-shard", "split-hospital": "split-hospital",
                    "challenger-stage1": "finetune2-stage1", "challenger": "finetune2-stage2",
                    "score-champion": "infer-ab-hospital", "score-challenger": "infer-ab-hospital"}
RUN_SETTINGS = ("retryStrategy", "activeDeadlineSeconds", "nodeSelector", "tolerations", "podSpecPatch")


def test_retraining_fine_tunes_and_scores_on_the_gpu_templates_of_the_full_pipeline():
    """The challenger's fine-tuning (and the scoring) asks for the GPU image, the GPU count and the GPU node exactly
    as the full pipeline's step does; the CPU steps stay on CPU nodes."""
    cron = {t["name"]: t for t in workflow_spec(load("retrain-cron.yaml"))["templates"]}
    pipeline = {t["name"]: t for t in load("full-pipeline.yaml")["spec"]["templates"]}
    steps = {name: t["container"]["args"][0] for name, t in cron.items()
             if t.get("container", {}).get("command") == ["mammo"]}
    assert set(SHARED_TEMPLATES) == {n for n, step in steps.items() if not step.startswith("retrain-")}
    for mine, theirs in SHARED_TEMPLATES.items():
        a, b = cron[mine], pipeline[theirs]
        assert a["container"]["args"][0] == b["container"]["args"][0], mine
        for key in RUN_SETTINGS:
            assert a.get(key) == b.get(key), (mine, key)
        for key in ("image", "resources", "securityContext", "volumeMounts", "command"):
            assert a["container"][key] == b["container"][key], (mine, key)
    gpu_switch = "{{=workflow.parameters.gpu == 'true' ? '-gpu' : ''}}"
    for name, gpus in (("challenger-stage1", "{{workflow.parameters.gpus}}"),
                       ("challenger", "{{workflow.parameters.gpus}}"), ("score-champion", "1")):
        container = cron[name]["container"]
        assert container["image"].endswith(gpu_switch), name
        assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus, name
        assert cron[name]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    for name in ("discover", "training-data", "gate", "preprocess-new", "split-hospital"):
        assert "nvidia.com/gpu" not in cron[name]["container"]["resources"]["limits"], name
        assert "-gpu" not in cron[name]["container"]["image"] and "nodeSelector" not in cron[name], name
    params = {p["name"]: p["value"] for p in workflow_spec(load("retrain-cron.yaml"))["arguments"]["parameters"]}
    assert params["gpu"] == "true" and params["gpus"] == "1"
