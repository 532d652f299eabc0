"""The container executor (common.containers) and engine probing (common.engine), without a container engine:
the command line it builds for a template is the template's pod spec, and it refuses what it cannot reproduce."""

from __future__ import annotations

import copy
import json
import os
import re
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from common import argo_render, pipeline, shards
from common.containers import (
    Executor,
    Run,
    UnsupportedWorkflow,
    condition_holds,
    host_path,
    pipeline_parameters,
    workflow_parameters,
)
from common.engine import Engine, EngineUnavailable, detect, host_limit_flags

ROOT = Path(__file__).resolve().parents[2]
ENGINE = Engine("/usr/bin/podman", ("--runtime", "runc"), ("--ulimit", "nofile=1024:1024"))


@pytest.fixture(scope="module")
def workflow() -> dict:
    return argo_render.as_dict(argo_render.full_pipeline())


def ci_run(workflow: dict, **overrides: str) -> Run:
    parameters = {**pipeline_parameters("ci", (1, 2), {}, "bucket"), "image-tag": "9.9.9",
                  "pushgateway-url": "http://127.0.0.1:9", **overrides}
    return Run("mammo-full-pipeline-abcde", workflow_parameters(workflow["spec"], parameters))


def option_values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == option]


SHARD = {"inputs.parameters.index": "1", "inputs.parameters.count": "2"}  # item 1 of a 2-shard plan


@pytest.mark.parametrize("task_name", ["synth-film", "preprocess-hospital-shard", "finetune1-stage2", "report"])
def test_command_line_is_the_templates_pod_spec(workflow, tmp_path, task_name):
    executor = Executor(workflow, ENGINE, storage=None, bucket="bucket", scratch=tmp_path)
    mounts = {"/work": tmp_path / "work", "/tmp": tmp_path / "tmp"}
    step_task = task_name.removesuffix("-shard")
    extra, label = (SHARD, f"{step_task}-shard-1") if step_task != task_name else ({}, task_name)
    argv = executor.command(ci_run(workflow), executor.templates[task_name], mounts, extra, "c")
    task = next(t for t in pipeline.tasks("synthetic", "ci") if t.name == step_task)
    # What the local runner would run for the ci profile (for a shard: its shard of it), as a container of the
    # step's CPU image.
    expected = task.argv("/work") if not extra else shards.shard_argv(
        task.argv("/work"), f"/work/{step_task}{shards.SHARDS_SUFFIX}", 1, 2)
    assert argv[-len(expected) - 1:] == [f"localhost/mammo-{task.step}:9.9.9", *expected]
    assert argv[:4] == ["/usr/bin/podman", "--runtime", "runc", "run"] and "nofile=1024:1024" in argv
    assert option_values(argv, "--user") == ["10001:10001"]
    assert "--read-only" in argv and "--read-only-tmpfs=false" in argv
    assert option_values(argv, "--cap-drop") == ["ALL"]
    assert option_values(argv, "--security-opt") == ["no-new-privileges"]
    assert sorted(option_values(argv, "-v")) == [f"{tmp_path / 'tmp'}:/tmp", f"{tmp_path / 'work'}:/work"]
    assert sorted(option_values(argv, "-e")) == sorted(
        [f"MAMMO_TASK={label}", "PIPELINE_ID=mammo-full-pipeline", "PUSHGATEWAY_URL=http://127.0.0.1:9"])
    assert json.loads(option_values(argv, "--entrypoint")[0]) == ["mammo"]


def test_gpu_parameter_switches_the_image(workflow, tmp_path):
    executor = Executor(workflow, ENGINE, storage=None, bucket="bucket", scratch=tmp_path)
    template = executor.templates["pretrain-a"]
    images = {gpu: executor.command(ci_run(workflow, gpu=gpu), template, {}, {}, "c")[
        -len(pipeline.tasks("synthetic", "ci")[9].argv("/work")) - 1] for gpu in ("true", "false")}
    assert images == {"true": "localhost/mammo-pretrain:9.9.9-gpu", "false": "localhost/mammo-pretrain:9.9.9"}


def test_profile_values_become_parameters():
    values = pipeline_parameters("ci", (2,), {}, "bucket")
    ci = pipeline._profile_value("ci", "synth.patients.hospital")
    assert values["synth-patients-hospital"] == str(ci) and values["profile"] == "ci"
    assert (values["finetune-config1"], values["finetune-config2"]) == ("false", "true")
    real = pipeline_parameters("ci", (1, 2), {"hospital_dicom": "s3://bucket/h/dicom/", "checkpoint_mean": "52.18"},
                               "bucket")
    assert (real["mode"], real["hospital-dicom"], real["checkpoint-mean"]) == ("real", "h/dicom/", "52.18")
    with pytest.raises(UnsupportedWorkflow, match="s3://bucket/"):
        pipeline_parameters("ci", (1, 2), {"hospital_dicom": "/local/dicom"}, "bucket")


def test_tags_and_conditions(workflow):
    run = ci_run(workflow)
    assert run.substitute("{{workflow.name}}/x/") == "mammo-full-pipeline-abcde/x/"
    assert run.substitute("a{{=workflow.parameters.gpu == 'true' ? '-gpu' : ''}}") == "a"
    with pytest.raises(UnsupportedWorkflow, match="tasks.x"):
        run.substitute("{{tasks.x.outputs.result}}")
    with pytest.raises(UnsupportedWorkflow, match="expression"):
        run.substitute("{{=sprig.upper('a')}}")
    assert condition_holds("'synthetic' == 'synthetic'") and not condition_holds("true == false")
    assert condition_holds("true != false")
    with pytest.raises(UnsupportedWorkflow):
        condition_holds("a == b || c == d")
    with pytest.raises(UnsupportedWorkflow, match="no parameter"):
        workflow_parameters(workflow["spec"], {"no-such-parameter": "1"})


@pytest.mark.parametrize("change, refusal", [
    ("withParam", "task preprocess-film-shard: withParam '{{tasks.shard-plan.outputs.result}}'"),
    ("withSequence", "task synth-film: withSequence"),
    ("volume", "volume data: only emptyDir"),
    ("valueFrom", "env S: only literal values and ConfigMap/Secret keys"),
    ("script", "template radiomics: only container and dag"),
])
def test_unsupported_argo_features_are_refused_before_anything_runs(workflow, tmp_path, change, refusal):
    changed = copy.deepcopy(workflow)
    templates = {t["name"]: t for t in changed["spec"]["templates"]}
    tasks = {t["name"]: t for t in templates["synthetic"]["dag"]["tasks"]}
    if change == "withParam":
        tasks["preprocess-film-shard"]["withParam"] = "{{tasks.shard-plan.outputs.result}}"
    elif change == "withSequence":
        tasks["synth-film"]["withSequence"] = {"count": "2"}
    elif change == "volume":
        changed["spec"]["volumes"].append({"name": "data", "persistentVolumeClaim": {"claimName": "x"}})
    elif change == "valueFrom":
        templates["radiomics"]["container"]["env"].append({"name": "S", "valueFrom": {"fieldRef": {}}})
    else:
        templates["radiomics"]["script"] = templates["radiomics"].pop("container")
    engine = Engine(str(tmp_path / "no-such-engine"))  # would fail loudly if anything tried to run
    with pytest.raises(UnsupportedWorkflow, match=re.escape(refusal)):
        Executor(changed, engine, storage=None, bucket="bucket", scratch=tmp_path).run(
            pipeline_parameters("ci", (1, 2), {}, "bucket"))


def test_the_rendered_workflows_pass_the_check(workflow, tmp_path):
    """What `argo submit` gets (sharded steps, ConfigMap env included) is run, not refused."""
    Executor(workflow, Engine("podman"), storage=None, bucket="bucket", scratch=tmp_path).check()


def test_host_path_uses_the_deepest_mount(tmp_path):
    mounts = {"/work": tmp_path / "w", "/work/input": tmp_path / "i"}
    assert host_path(mounts, "/work/split-film") == tmp_path / "w" / "split-film"
    assert host_path(mounts, "/work/input/checkpoint/x.h5") == tmp_path / "i" / "checkpoint" / "x.h5"
    with pytest.raises(UnsupportedWorkflow, match="read-only"):
        host_path(mounts, "/opt/venv")


def fake_engine(folder: Path, accepts: str) -> str:
    """A `podman` that runs a container only when its command line contains every word of `accepts`."""
    for name in ("podman", "runc"):
        path = folder / name
        words = " ".join(f'*"{w}"*' for w in accepts.split()) if name == "podman" else ""
        body = f'case "$*" in {words.replace("* *", "*")}) exit 0;; esac\n' if words else ""
        path.write_text(f"#!/bin/sh\n{body}echo \"Error: refused $*\" >&2\nexit 1\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(folder / "podman")


def test_detect_finds_the_runtime_and_limits_this_host_needs(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    engine = detect("base", fake_engine(tmp_path, f"--runtime runc nofile={nofile}:{nofile}"))
    assert engine.global_flags == ("--runtime", "runc") and engine.limit_flags == host_limit_flags()
    plain = detect("base", fake_engine(tmp_path, "true"))
    assert plain.global_flags == () and plain.limit_flags == ()
    with pytest.raises(EngineUnavailable, match="cannot run a container here.*refused"):
        detect("base", fake_engine(tmp_path, "--no-such-flag"))


def test_host_limits_never_exceed_this_process_or_pid_max():
    flags = dict(flag.split("=") for flag in host_limit_flags()[1::2])
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    assert int(flags["nproc"].split(":")[1]) <= pid_max
    assert int(flags["nofile"].split(":")[1]) <= resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def dockerfile_stage_chain(step: str) -> list[str]:
    from test_dockerfiles import stages

    stage_map, chain = stages("Dockerfile.cpu"), [step]
    while stage_map[chain[-1]]["base"] in stage_map:
        chain.append(stage_map[chain[-1]]["base"])
    return chain


def test_images_without_tensorflow_hold_steps_that_never_import_it():
    from test_dockerfiles import make_variable

    light = [s for s in make_variable("IMAGE_STEPS") if "model-deps" not in dockerfile_stage_chain(s)]
    assert {"synth", "preprocess", "split", "radiomics"} <= set(light)
    probe = ("import sys; from jobs import cli; cli.build_parser(load={sys.argv[1]}); "
             "print(sorted(m for m in ('tensorflow', 'keras', 'h5py') if m in sys.modules))")
    for step in light:
        loaded = subprocess.run([sys.executable, "-c", probe, step], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        assert loaded == "[]", f"mammo {step} imports {loaded} but its image has no TensorFlow"
