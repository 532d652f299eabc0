"""The step images, built here, and the ci pipeline run in them as the Argo Workflow would run it (`make image-test`).

Builds the base image and every CPU step image, then runs the rendered Workflow with the podman executor: each
task a container as uid 10001 on a read-only root file system, its folders passed only through the loopback S3
server, its metrics pushed to the loopback Pushgateway. The run's model figures must equal the same pipeline run
in-process. Opt-in (MAMMO_IMAGE_TEST=1, set by make image-test): the builds take minutes. Skips where no
container can run.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from helpers import MAMMO

from common import __version__, argo_render, images, shards, steps
from common.containers import Executor, Run, give_to, pipeline_parameters, workflow_parameters
from common.engine import EngineUnavailable, detect, find_binary

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.containers, pytest.mark.slow]
MODEL_FIELDS = ("n", "n_pos", "auc", "auc_ci95", "threshold", "sensitivity", "specificity", "accuracy")
# Writes each of these paths and reports what happened; only the two emptyDir mounts may take a file.
WRITE_PROBE = """
import json, os
result = {"uid": os.getuid(), "gid": os.getgid()}
for folder in ["/", "/opt/venv", "/opt/venv/lib/python3.11/site-packages", "/src", "/etc", "/usr/local/bin",
               "/var/tmp", "/run", "/root", "/home", "/work", "/tmp"]:
    try:
        with open(os.path.join(folder, "probe.txt"), "w") as handle:
            handle.write("x")
        result[folder] = "written"
    except OSError as error:
        result[folder] = error.strerror
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The engine and the CPU step images, built (or found in the layer cache): the step registry's list, which
    the Makefile's IMAGE_STEPS is too."""
    if os.environ.get("MAMMO_IMAGE_TEST") != "1":
        pytest.skip("builds the step images and runs containers: run it with make image-test")
    try:
        binary = find_binary()
        engine = detect(images.ensure_base(binary), binary)
    except EngineUnavailable as error:
        pytest.skip(f"no container can run here: {error}")
    results = tmp_path_factory.mktemp("images") / "images.json"
    started = time.time()
    code = images.main(["build", "--steps", " ".join(steps.image_steps()), "--registry", "localhost",
                        "--tag", __version__, "--results", str(results)])
    assert code == 0
    print(f"image builds: {time.time() - started:.0f}s")
    return engine, json.loads(results.read_text())


@pytest.fixture(scope="module")
def workflow() -> dict:
    return argo_render.as_dict(argo_render.full_pipeline())


def probe_command(engine, workflow, task_name: str, tmp_path: Path, command: list[str]) -> list[str]:
    """The executor's command line for a task's template, with the container's command swapped for `command`."""
    executor = Executor(workflow, engine, storage=None, bucket="-", scratch=tmp_path)
    template = copy.deepcopy(executor.templates[task_name])
    template["container"]["command"], template["container"]["args"] = command, []
    mounts = {"/work": tmp_path / "work", "/tmp": tmp_path / "tmp"}
    for path in mounts.values():
        path.mkdir(parents=True)
        give_to(path, (10001, 10001))
    run = Run("probe", workflow_parameters(workflow["spec"], {**pipeline_parameters("ci", (1, 2), {}, "-"),
                                                              "image-tag": __version__}))
    return executor.command(run, template, mounts, {}, f"probe-{task_name}-{os.getpid()}")


@pytest.mark.parametrize("task_name", ["preprocess-film", "finetune1-stage1"])
def test_images_run_as_10001_and_write_only_their_mounted_folders(built, workflow, tmp_path, task_name):
    engine, _ = built
    argv = probe_command(engine, workflow, task_name, tmp_path, ["python", "-c", WRITE_PROBE])
    result = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    assert (result.pop("uid"), result.pop("gid")) == (10001, 10001)
    assert {result.pop("/work"), result.pop("/tmp")} == {"written"}
    assert (tmp_path / "work" / "probe.txt").read_text() == "x"
    refused = {folder: outcome for folder, outcome in result.items() if outcome != "written"}
    assert refused == result, f"writable outside the mounts: {set(result) - set(refused)}"
    assert "Read-only file system" in refused.values()


def test_only_the_model_images_carry_tensorflow(built, workflow, tmp_path):
    engine, _ = built
    check = ["python", "-c", "import importlib.util as u; print(u.find_spec('tensorflow') is not None)"]
    found = {}
    for name in ("synth-film", "preprocess-film", "split-film", "radiomics", "pretrain-a", "report"):
        argv = probe_command(engine, workflow, name, tmp_path / name, check)
        found[name] = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
    assert found == {"synth-film": "False", "preprocess-film": "False", "split-film": "False", "radiomics": "False",
                     "pretrain-a": "True", "report": "True"}


def test_images_hold_the_pinned_versions_of_the_sheet_readers(built, workflow, tmp_path):
    """xlrd and openpyxl (the datasets' .xls/.xlsx sheets) at constraints.txt's versions, in the lightest image."""
    engine, _ = built
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line)
    check = ["python", "-c", "from importlib.metadata import version; import xlrd, openpyxl; "
             "print(version('xlrd'), version('openpyxl'))"]
    argv = probe_command(engine, workflow, "synth-film", tmp_path, check)
    found = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
    assert found == [pins["xlrd"], pins["openpyxl"]]


def test_cpu_only_images_share_the_dependency_layer(built):
    _, result = built
    layer_sets = {step: {layer["id"] for layer in info["layers"]} for step, info in result["images"].items()}
    shared = set.intersection(*layer_sets.values())
    shared_bytes = sum(layer["bytes"] for layer in result["images"]["synth"]["layers"] if layer["id"] in shared)
    # Every image holds the base and the dependency layer; the whole set costs little more than its largest image.
    assert shared_bytes > 0.8 * result["images"]["synth"]["bytes"]
    assert result["set_over_largest"] < 1.1, result["set_over_largest"]


@pytest.fixture(scope="module")
def in_process_ci(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("in_process")
    started = time.time()
    command = [*MAMMO, "pipeline", "run", "--profile", "ci", "--workdir", str(workdir)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((workdir / "report" / "summary.json").read_text()), time.time() - started


def model_figures(summary: dict) -> dict:
    return {row: {k: entry.get(k) for k in MODEL_FIELDS} for row, entry in summary["models"].items()}


def expected_nodes(spec: dict, client, bucket: str, workflow_name: str) -> list[dict]:
    """Every container the synthetic DAG of the committed YAML runs: its step, Pushgateway task label, the S3
    folders it reads or writes by key (each with `_SUCCESS.json`) and the single objects it reads.

    A shard template stands for one container per shard: `shards.plan` over the rows of the table its plan
    pod read (an object in the bucket), with the Workflow's default `shards` parameter.
    """
    templates = {t["name"]: t for t in spec["templates"]}
    requested = int(next(p["value"] for p in spec["arguments"]["parameters"] if p["name"] == "shards"))

    def key(text: str) -> str:
        return text.replace("{{workflow.name}}", workflow_name)

    def step_of(folder_key: str) -> str:  # the step whose output a folder key is: <workflow>/<task>[.shards/i]/
        return templates[folder_key.split("/")[1].removesuffix(shards.SHARDS_SUFFIX)]["container"]["args"][0]

    nodes = []
    for task in templates["synthetic"]["dag"]["tasks"]:
        template = templates[task["template"]]
        step = template["container"]["args"][0]
        label = next(e["value"] for e in template["container"]["env"] if e["name"] == "MAMMO_TASK")
        outputs = [a["s3"]["key"] for a in template.get("outputs", {}).get("artifacts", [])]
        inputs = [a["s3"]["key"] for a in template.get("inputs", {}).get("artifacts", []) if "s3" in a]
        if "withParam" not in task:
            nodes.append({"task": label, "step": step, "shard": None, "outputs": [key(k) for k in outputs],
                          "reads": [key(k) for k in inputs if k.endswith("/") and shards.SHARDS_SUFFIX not in k],
                          "files": [key(k) for k in inputs if not k.endswith("/")]})
            continue
        plan = templates[task["withParam"].split(".")[1]]
        sharded = plan["container"]["args"][plan["container"]["args"].index("--step") + 1]
        rows_key = key(plan["inputs"]["artifacts"][0]["s3"]["key"])
        rows = shards.rows_in(io.BytesIO(client.get_object(Bucket=bucket, Key=rows_key)["Body"].read()))
        for shard in shards.plan(rows, requested, shards.SHARDED_STEPS[sharded].min_per_shard):
            index = str(shard["index"])
            nodes.append({"task": label.replace("{{inputs.parameters.index}}", index), "step": step, "shard": shard,
                          "outputs": [key(k).replace("{{inputs.parameters.index}}", index) for k in outputs],
                          "reads": [key(k) for k in inputs], "files": []})
    for node in nodes:
        node["reads"] = {folder: step_of(folder) for folder in node["reads"]}
    return nodes


def test_containerised_ci_pipeline_equals_the_in_process_run(built, workflow, in_process_ci, s3_server, bucket,
                                                             pushgateway, pipeline_id, tmp_path):
    env = {**os.environ, **s3_server.env, "PUSHGATEWAY_URL": pushgateway.url, "PIPELINE_ID": pipeline_id}
    started = time.time()
    command = [*MAMMO, "pipeline", "run", "--executor", "podman", "--artifacts",
               f"s3://{bucket}", "--profile", "ci", "--workdir", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    seconds = time.time() - started
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    reference, reference_seconds = in_process_ci
    print(f"ci pipeline: containers {seconds:.0f}s, in-process {reference_seconds:.0f}s "
          f"(ratio {seconds / reference_seconds:.2f})")

    # 1. The same science: every Table 9 row's figures, to the last digit.
    assert set(summary["models"]) == set(reference["models"]) and len(summary["models"]) >= 4
    assert model_figures(summary) == model_figures(reference)

    # 2. Every artifact key the committed Argo YAML names for the synthetic DAG exists in S3, with its marker; a
    #    sharded step's shard keys once per shard of a plan computed here from the table its plan pod counted.
    client = s3_server.client()
    listing = client.list_objects_v2(Bucket=bucket, Delimiter="/")
    (workflow_name,) = [p["Prefix"].rstrip("/") for p in listing.get("CommonPrefixes", [])]
    committed = yaml.safe_load((ROOT / "argo" / "full-pipeline.yaml").read_text())["spec"]
    nodes = expected_nodes(committed, client, bucket, workflow_name)
    assert {n["task"] for n in nodes} >= {"preprocess-hospital-shard-0", "radiomics-shard-0", "radiomics", "report"}
    def marker(key: str) -> dict:
        return json.loads(client.get_object(Bucket=bucket, Key=key + "_SUCCESS.json")["Body"].read())

    for node in nodes:
        for key in node["outputs"]:
            assert (marker(key)["step"], marker(key).get("shard")) == (node["step"], node["shard"]), key
        for key, step in node["reads"].items():
            assert marker(key)["step"] == step, key
        for key in node["files"]:
            assert client.head_object(Bucket=bucket, Key=key)["ContentLength"] > 0, key

    # 3. The metrics each container (every shard under its own task label) and the report pushed, and the exit
    #    handler's outcome.
    for node in nodes:
        assert pushgateway.samples("mammo_step_success", job=f"mammo_{node['step'].replace('-', '_')}",
                                   pipeline=pipeline_id, task=node["task"]) == [1.0], node["task"]
    for row, entry in summary["models"].items():
        if entry.get("auc") is not None:
            assert pushgateway.samples("mammo_model_auc", pipeline=pipeline_id, row=row) == [
                pytest.approx(entry["auc"])], row
    assert pushgateway.samples("mammo_workflow_success", pipeline=pipeline_id) == [1.0]


def test_gpu_image_imports_tensorflow_and_falls_back_to_cpu(built, workflow, tmp_path):
    """Run where `make images` built the GPU images (CUDA wheels, several GB): no GPU here, so CPU must serve."""
    engine, _ = built
    image = f"localhost/mammo-pretrain:{__version__}-gpu"
    if not engine.image_exists(image):
        pytest.skip(f"{image} is not built (make images REGISTRY=localhost builds it)")
    check = ["python", "-c", "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')), "
             "float(tf.reduce_sum(tf.ones((3, 4)))), tf.test.is_built_with_cuda())"]
    argv = probe_command(engine, workflow, "pretrain-a", tmp_path, check)
    argv[argv.index(f"localhost/mammo-pretrain:{__version__}")] = image
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["0", "12.0", "True"]
