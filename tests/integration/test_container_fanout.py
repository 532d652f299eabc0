"""The container executor's `withParam` fan-out (common.containers), as Argo evaluates it, without an engine:
a stand-in `podman` (helpers/process_engine.py) runs each container's command as a host process on the folders
the executor staged, so what is checked is the executor's side: the list from the producing task's output
parameter, one container per item with `{{item...}}` substituted, the aggregate status, the merge after."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from common import argo_render
from common.containers import Executor, UnsupportedWorkflow, WorkflowFailed, pipeline_parameters
from common.engine import Engine
from common.storage import S3Uri, Storage

ROOT = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).parent / "helpers" / "process_engine.py"
SHARDED_TASKS = ("synth-hospital", "preprocess-hospital-plan", "preprocess-hospital-shard", "preprocess-hospital")


@pytest.fixture
def engine(tmp_path, monkeypatch) -> tuple[Engine, Path]:
    """A `podman` on PATH that runs containers as processes, and the log of what it ran."""
    binary = tmp_path / "bin" / "podman"
    binary.parent.mkdir()
    binary.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HELPER}" "$@"\n')
    binary.chmod(0o755)
    log = tmp_path / "engine.jsonl"
    monkeypatch.setenv("PROCESS_ENGINE_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    return Engine(str(binary)), log


def ran(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def file_digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "_SUCCESS.json"}


@pytest.mark.slow
def test_sharded_preprocess_fans_out_one_container_per_planned_shard_then_merges(
        engine, s3_server, s3_env, bucket, pushgateway, pipeline_id, tmp_path):
    workflow = argo_render.as_dict(argo_render.full_pipeline())  # the Workflow `argo submit` gets
    synthetic = next(t for t in workflow["spec"]["templates"] if t["name"] == "synthetic")
    synthetic["dag"]["tasks"] = [t for t in synthetic["dag"]["tasks"] if t["name"] in SHARDED_TASKS]
    del workflow["spec"]["onExit"]
    parameters = {**pipeline_parameters("ci", (1, 2), {}, bucket), "image-tag": "9.9.9", "shards": "3",
                  "synth-patients-hospital": "100", "pushgateway-url": pushgateway.url, "pipeline-id": pipeline_id}
    binary, log = engine
    executor = Executor(workflow, binary, Storage(), bucket, tmp_path / "scratch", echo=lambda line: None)

    run = executor.run(parameters, name="mammo-full-pipeline-fan")

    # 100 patients at 50 per shard at least: the plan pod asks for 3 and gets 2 (common.shards.plan).
    assert json.loads(run.output_parameters["preprocess-hospital-plan"]["shards"]) == [
        {"index": 0, "count": 2}, {"index": 1, "count": 2}]
    order = [entry["name"].removeprefix("mammo-full-pipeline-fan-") for entry in ran(log)]
    assert order == ["synth-hospital", "preprocess-hospital-plan", "preprocess-hospital-shard-0",
                     "preprocess-hospital-shard-1", "preprocess-hospital"]
    shard_runs = ran(log)[2:4]
    for index, entry in enumerate(shard_runs):
        assert option(entry["args"], "--shard") == f"{index}/2"
        assert option(entry["args"], "--out") == f"/work/preprocess-hospital.shards/{index}"
        assert f"MAMMO_TASK=preprocess-hospital-shard-{index}" in entry["env"]
        assert entry["image"] == "localhost/mammo-preprocess:9.9.9"
    assert "--shard" not in ran(log)[4]["args"] and option(ran(log)[4]["args"], "--merge-shards")
    assert (run.status["preprocess-hospital-shard"], run.status["preprocess-hospital"]) == ("Succeeded", "Succeeded")

    # Each shard published under its own key, and the merge equals the unsharded step on the same input.
    client = s3_server.client()
    for index in (0, 1):
        key = f"mammo-full-pipeline-fan/preprocess-hospital.shards/{index}/_SUCCESS.json"
        assert json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())["shard"] == {
            "index": index, "count": 2}
    storage = Storage()
    storage.download_dir(S3Uri(bucket, run.output_keys["synth-hospital"]), tmp_path / "synth")
    storage.download_dir(S3Uri(bucket, run.output_keys["preprocess-hospital"]), tmp_path / "merged")
    unsharded = ["preprocess", "--input", str(tmp_path / "synth/dicom"), "--cohort", str(tmp_path / "synth/cohort.csv"),
                 "--out", str(tmp_path / "whole"), "--profile", "ci", "--workers", "1"]
    reference = subprocess.run([sys.executable, "-m", "jobs.cli", *unsharded], cwd=ROOT, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr[-2000:]
    merged, whole = file_digests(tmp_path / "merged"), file_digests(tmp_path / "whole")
    assert len(merged) > 400 and merged == whole

    # Each shard container pushed under its own task label, as its Argo pod would.
    for task in ("preprocess-hospital-shard-0", "preprocess-hospital-shard-1", "preprocess-hospital"):
        assert pushgateway.samples("mammo_step_success", job="mammo_preprocess", pipeline=pipeline_id,
                                   task=task) == [1.0], task


def toy_workflow(items: list | str) -> dict:
    """plan -> fan-out over its output parameter -> merge, with python containers on the pod's two emptyDirs."""
    def container(*args: str) -> dict:
        return {"image": "localhost/toy:1", "command": ["python", "-c"], "args": list(args),
                "volumeMounts": [{"name": "work", "mountPath": "/work"}, {"name": "tmp", "mountPath": "/tmp"}]}

    write = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"
    item = "import sys; print(sys.argv[1:]); sys.exit(int(sys.argv[3]))"
    value = items if isinstance(items, str) else json.dumps(items)
    return {"metadata": {"generateName": "toy-"}, "spec": {
        "entrypoint": "main", "volumes": [{"name": "work", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
        "templates": [
            {"name": "main", "dag": {"tasks": [
                {"name": "plan", "template": "plan"},
                {"name": "each", "template": "each", "depends": "plan",
                 "withParam": "{{tasks.plan.outputs.parameters.list}}",
                 "arguments": {"parameters": [{"name": "whole", "value": "{{item}}"},
                                              {"name": "colour", "value": "{{item.colour}}"},
                                              {"name": "code", "value": "{{item.code}}"}]}},
                {"name": "after", "template": "after", "depends": "each"}]}},
            {"name": "plan", "container": container(write, "/tmp/list.json", value),
             "outputs": {"parameters": [{"name": "list", "valueFrom": {"path": "/tmp/list.json"}}]}},
            {"name": "each", "container": container(item, "{{inputs.parameters.whole}}",
                                                    "{{inputs.parameters.colour}}", "{{inputs.parameters.code}}"),
             "inputs": {"parameters": [{"name": "whole"}, {"name": "colour"}, {"name": "code"}]}},
            {"name": "after", "container": container("print('after')")},
        ]}}


def test_items_are_substituted_and_every_item_runs_before_the_aggregate_fails(engine, tmp_path):
    binary, log = engine
    items = [{"colour": "red", "code": 0}, {"colour": "blue", "code": 3}, {"colour": "green", "code": 0}]
    executor = Executor(toy_workflow(items), binary, storage=None, bucket="-", scratch=tmp_path / "s",
                        echo=lambda line: None)
    with pytest.raises(WorkflowFailed, match=r"task each: 1 of 3 item\(s\) failed; first: task each-1 failed"):
        executor.run({}, name="toy-a")
    runs = {entry["name"].removeprefix("toy-a-"): entry["args"][1:] for entry in ran(log)}
    # Every item ran (Argo starts them together), the one after the group did not; objects render as JSON.
    assert runs == {"plan": ["/tmp/list.json", json.dumps(items)],
                    "each-0": ['{"colour":"red","code":0}', "red", "0"],
                    "each-1": ['{"colour":"blue","code":3}', "blue", "3"],
                    "each-2": ['{"colour":"green","code":0}', "green", "0"]}


def test_an_empty_list_skips_the_task_and_its_dependants_run(engine, tmp_path):
    binary, log = engine
    run = Executor(toy_workflow([]), binary, storage=None, bucket="-", scratch=tmp_path / "s",
                   echo=lambda line: None).run({}, name="toy-b")
    assert run.status == {"plan": "Succeeded", "each": "Skipped", "after": "Succeeded"}
    assert [entry["name"] for entry in ran(log)] == ["toy-b-plan", "toy-b-after"]


def test_a_value_that_is_not_a_json_list_fails_the_task_in_one_line(engine, tmp_path):
    binary, log = engine
    executor = Executor(toy_workflow('{"colour": "red"}'), binary, storage=None, bucket="-", scratch=tmp_path / "s",
                        echo=lambda line: None)
    with pytest.raises(WorkflowFailed, match=r"^task each: withParam value could not be parsed as a JSON list: "):
        executor.run({}, name="toy-c")
    assert [entry["name"] for entry in ran(log)] == ["toy-c-plan"]


@pytest.mark.parametrize("change, refusal", [
    ("withItems", "task each: withItems"),
    ("result", "withParam '{{tasks.plan.outputs.result}}': only an output parameter of a task it depends on"),
    ("undeclared", "withParam .*only an output parameter of a task it depends on"),
    ("jsonPath", "output parameter list: only valueFrom.path"),
])
def test_fan_outs_it_would_run_differently_are_refused_before_anything_runs(engine, tmp_path, change, refusal):
    workflow = toy_workflow([1, 2])
    main, plan = workflow["spec"]["templates"][0], workflow["spec"]["templates"][1]
    each = main["dag"]["tasks"][1]
    if change == "withItems":
        each["withItems"] = [1, 2]
    elif change == "result":
        each["withParam"] = "{{tasks.plan.outputs.result}}"
    elif change == "undeclared":
        del each["depends"]
    else:
        plan["outputs"]["parameters"][0]["valueFrom"] = {"jsonPath": "{.x}"}
    binary, log = engine
    with pytest.raises(UnsupportedWorkflow, match=refusal):
        Executor(copy.deepcopy(workflow), binary, storage=None, bucket="-", scratch=tmp_path).run({})
    assert ran(log) == []
