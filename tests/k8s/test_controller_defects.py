"""Defects a real Argo 4.x controller and cluster would hit, checked offline against the committed YAML and the
kustomize builds (issue 14, Fix 1-6). Each rule states the controller behaviour it guards against."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml
from argo_checks import workflow_spec

from common import argo_render

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = yaml.safe_load((ROOT / "manifests/base/kustomization.yaml").read_text())["namespace"]
sys.path.insert(0, str(ROOT / "tests/kind"))


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "argo" / name).read_text())


def all_templates():
    for name in sorted(argo_render.RENDERINGS):
        for template in workflow_spec(load(name))["templates"]:
            yield name, template


# --- Fix 1: `argo submit argo/full-pipeline.yaml` lands in the namespace that has the service account ------------

def submit_commands(text: str) -> list[list[str]]:
    """Every `argo submit ...` command written in a document (inside backticks or code blocks)."""
    commands = []
    for match in re.finditer(r"argo submit[^`\n]*", text):
        words = shlex.split(match[0].replace("...", ""))
        commands.append(words)
    return commands


def effective_namespace(words: list[str], document_namespace: str | None) -> str | None:
    """The argo CLI uses metadata.namespace when the manifest has one, else -n/--namespace, else the context's."""
    if document_namespace:
        return document_namespace
    for flag in ("-n", "--namespace"):
        if flag in words:
            return words[words.index(flag) + 1]
    return None  # the kube context's namespace: usually `default`, where nothing of the pipeline exists


@pytest.mark.parametrize("document", ["README.md", "tests/kind/README.md"])
def test_documented_submit_commands_reach_the_pipeline_namespace(document):
    commands = [c for c in submit_commands((ROOT / document).read_text()) if "argo/full-pipeline.yaml" in c]
    assert commands, f"{document} documents no `argo submit argo/full-pipeline.yaml`"
    workflow_namespace = load("full-pipeline.yaml")["metadata"].get("namespace")
    for words in commands:
        assert effective_namespace(words, workflow_namespace) == NAMESPACE, " ".join(words)


def test_the_namespace_rule_can_fail():
    assert effective_namespace(["argo", "submit", "argo/full-pipeline.yaml"], None) is None
    assert effective_namespace(["argo", "submit", "-n", "mammo", "x.yaml"], None) == "mammo"


# --- Fix 2: retries that still mean something for steps allowed 24-48 h ----------------------------------------

def seconds(value) -> float:
    """An Argo duration: an integer (seconds) or a Go duration string such as 1m30s or 48h."""
    if isinstance(value, int) or str(value).isdigit():
        return float(value)
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", str(value))
    assert parts and "".join(n + u for n, u in parts) == str(value), f"unparsed duration {value}"
    return sum(float(n) * units[u] for n, u in parts)


def retry_problems(template: dict) -> list[str]:
    """The controller measures backoff.maxDuration from the FIRST attempt's start: no retry is started after it,
    and a retry's pod gets the deadline first start + maxDuration. So maxDuration must cover every attempt at its
    full activeDeadlineSeconds plus the waits between them, or be absent (attempts bounded by the deadline)."""
    strategy = template.get("retryStrategy")
    if strategy is None:
        return []
    limit = int(strategy.get("limit", 0))
    backoff = strategy.get("backoff", {})
    if "maxDuration" not in backoff:
        return []
    deadline = float(template["activeDeadlineSeconds"])
    wait, factor = seconds(backoff.get("duration", 0)), float(backoff.get("factor", 1))
    waits = sum(wait * factor**i for i in range(limit))
    needed = (limit + 1) * deadline + waits
    if seconds(backoff["maxDuration"]) < needed:
        return [f"{template['name']}: maxDuration {backoff['maxDuration']} < {limit + 1} attempts x {deadline:.0f}s "
                f"+ {waits:.0f}s of backoff = {needed:.0f}s"]
    return []


def test_retry_max_duration_covers_every_attempt():
    problems = [p for _, t in all_templates() for p in retry_problems(t)]
    assert problems == []
    long_steps = [t for _, t in all_templates() if int(t.get("activeDeadlineSeconds", 0)) >= 24 * 3600]
    assert long_steps and all(int(t["retryStrategy"]["limit"]) >= 1 for t in long_steps)


def test_the_retry_rule_can_fail():
    template = {"name": "t", "activeDeadlineSeconds": 86400,
                "retryStrategy": {"limit": 2, "backoff": {"duration": "1m", "factor": 2, "maxDuration": "30m"}}}
    assert retry_problems(template)
    template["retryStrategy"]["backoff"]["maxDuration"] = "72h3m"
    assert not retry_problems(template)
    assert seconds("1h30m") == 5400 and seconds(90) == 90


# --- Fixes 3 and 4 need the kustomize builds --------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(kustomize_builds) -> dict[str, list[dict]]:
    return kustomize_builds


def config_maps(objects: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}


def resolvable_everywhere(host: str, objects: list[dict]) -> bool:
    """A Service name a pod in ANY namespace resolves: <service>.<namespace>.svc[.cluster.local] of a real Service
    (the Argo server lives in namespace argo; a bare `minio` only resolves inside the pipeline's namespace)."""
    parts = host.split(".")
    if len(parts) < 3 or parts[2] != "svc" or parts[3:] not in ([], ["cluster", "local"]):
        return "." in host and not host.endswith(".svc")  # an external name such as s3.amazonaws.com
    services = {(o["metadata"]["name"], o["metadata"].get("namespace")) for o in objects if o["kind"] == "Service"}
    return (parts[0], parts[1]) in services


def test_dev_artifact_endpoint_resolves_from_the_argo_server(built):
    maps = config_maps(built["dev"])
    s3 = yaml.safe_load(maps["artifact-repositories"]["default-v1"])["s3"]
    assert resolvable_everywhere(s3["endpoint"].rsplit(":", 1)[0], built["dev"]), s3["endpoint"]
    step_endpoint = maps["mammo-storage"]["endpoint"]
    assert resolvable_everywhere(re.sub(r"^https?://", "", step_endpoint).rsplit(":", 1)[0], built["dev"])


def test_the_endpoint_rule_can_fail(built):
    assert not resolvable_everywhere("minio", built["dev"])
    assert not resolvable_everywhere("minio.argo.svc.cluster.local", built["dev"])


def region_of(container: dict, maps: dict[str, dict]) -> dict[str, str | None]:
    """What boto3 sees as AWS_REGION / AWS_DEFAULT_REGION in a container, ConfigMap references resolved."""
    seen: dict[str, str | None] = {"AWS_REGION": None, "AWS_DEFAULT_REGION": None}
    for env in container.get("env", []):
        if env["name"] not in seen:
            continue
        ref = env.get("valueFrom", {}).get("configMapKeyRef")
        seen[env["name"]] = maps.get(ref["name"], {}).get(ref["key"]) if ref else env.get("value")
    return seen


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_storage_region_reaches_every_step(built, overlay):
    maps = config_maps(built[overlay])
    region = maps["mammo-storage"]["region"]
    steps = 0
    for obj in built[overlay]:
        if not obj["apiVersion"].startswith("argoproj.io/"):
            continue
        for template in workflow_spec(obj)["templates"]:
            if template.get("container", {}).get("command") == ["mammo"]:
                steps += 1
                assert region_of(template["container"], maps) == {"AWS_REGION": region, "AWS_DEFAULT_REGION": region}
    assert steps >= 10
    if overlay == "prod":
        s3 = yaml.safe_load(maps["artifact-repositories"]["default-v1"])["s3"]
        assert region == s3["region"] == "eu-central-1"


# --- Fix 5: the CPU-only kind run fits a small node ----------------------------------------------------------

# A kind node on a 4-vCPU, 8 GiB laptop: the control plane, Argo, MinIO and the Pushgateway reserve about 1.5 CPU
# and 2 GiB, so one step pod may ask for at most this much or it stays Pending.
KIND_POD_CPU, KIND_POD_MEMORY_GI = 2.0, 4.0


def cpu(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def memory_gi(quantity: str) -> float:
    units = {"Ki": 2**-20, "Mi": 2**-10, "Gi": 1, "Ti": 2**10}
    return float(quantity[:-2]) * units[quantity[-2:]]


def cpu_mode_requests(template: dict) -> dict[str, str]:
    """The main container's requests when `gpu=false` picks the CPU podSpecPatch (a strategic merge by name)."""
    requests = dict(template["container"].get("resources", {}).get("requests", {}))
    patch = template.get("podSpecPatch")
    if patch:
        cpu_branch = re.search(r": '(\{.*\})'\}\}$", patch)[1]
        for container in json.loads(cpu_branch).get("containers", []):
            if container["name"] == "main":
                requests.update({k: v for k, v in container.get("resources", {}).get("requests", {}).items()
                                 if v is not None})
    return requests


def test_cpu_only_pods_fit_a_kind_node():
    too_big = []
    for name, template in all_templates():
        if "container" not in template:
            continue
        requests = cpu_mode_requests(template)
        memory = memory_gi(requests.get("memory", "0Gi"))
        if cpu(requests.get("cpu", "0")) > KIND_POD_CPU or memory > KIND_POD_MEMORY_GI:
            too_big.append(f"{name}:{template['name']} requests {requests}")
    assert too_big == []


def test_the_fit_rule_can_fail():
    template = {"container": {"resources": {"requests": {"cpu": "4", "memory": "4Gi"}}},
                "podSpecPatch": "{{=workflow.parameters.gpu == 'true' ? '{}' : '{\"nodeSelector\": null }'}}"}
    assert cpu(cpu_mode_requests(template)["cpu"]) == 4 and memory_gi("512Mi") == 0.5


def test_kind_harness_submits_file_template_and_cron_in_the_namespace():
    import harness

    runs = harness.submissions(("kind.local", "kind"), {"film": 4, "ffdm": 4, "hospital": 6})
    sources = [run.argv[run.argv.index("submit") + 1:run.argv.index("submit") + 3] for run in runs]
    assert [str(ROOT / "argo/full-pipeline.yaml")] == sources[0][:1]
    assert ["--from", "workflowtemplate/mammo-full-pipeline"] in sources
    assert ["--from", "cronwf/mammo-retrain"] in sources
    for run in runs:
        assert run.argv[run.argv.index("-n") + 1] == NAMESPACE
        assert "gpu=false" in run.argv


def test_kind_harness_honours_the_timeout(tmp_path, monkeypatch):
    """A fake `argo` that never finishes: the wait gives up at the timeout and stops the workflow."""
    import harness

    log = tmp_path / "calls.txt"
    fake = tmp_path / "argo"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n"
                    "case \"$*\" in *submit*) echo '{\"metadata\": {\"name\": \"wf-1\"}}';; esac\n"
                    "case \"$*\" in *wait*) sleep 30;; esac\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    assert harness.timeout_seconds("2s") == 2 and harness.timeout_seconds("90m") == 5400
    run = harness.Submission("pipeline", ["argo", "--context", "ctx", "-n", NAMESPACE, "submit", "x.yaml"])
    with pytest.raises(harness.TimedOut):
        harness.submit_and_wait(run, "ctx", timeout="2s")
    calls = log.read_text()
    assert "stop" in calls and "wf-1" in calls


# --- Fix 6: the GPU image's CUDA wheels are pinned; the device plugin, not the image, picks the GPUs -------------

# The `and-cuda` extra of tensorflow 2.21.0 (its METADATA Requires-Dist): only ranges, so an unpinned build floats.
AND_CUDA = ["nvidia-cublas-cu12", "nvidia-cuda-cupti-cu12", "nvidia-cuda-nvcc-cu12", "nvidia-cuda-nvrtc-cu12",
            "nvidia-cuda-runtime-cu12", "nvidia-cudnn-cu12", "nvidia-cufft-cu12", "nvidia-curand-cu12",
            "nvidia-cusolver-cu12", "nvidia-cusparse-cu12", "nvidia-nccl-cu12", "nvidia-nvjitlink-cu12"]


def pip_constraint_files(dockerfile: str) -> list[str]:
    """The -c files of the pip command that installs tensorflow[and-cuda]."""
    text = re.sub(r"\\\n", " ", (ROOT / dockerfile).read_text())
    [command] = [c for c in re.split(r"&&|\n", text) if "pip install" in c and "tensorflow[and-cuda]" in c]
    return re.findall(r"-c\s+(\S+)", command)


def exact_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9._-]+)==([0-9][0-9A-Za-z.]*)", line).groups()
            pins[name.lower()] = version
    return pins


def test_gpu_image_pins_every_cuda_wheel():
    files = [f for f in pip_constraint_files("Dockerfile.gpu") if not f.startswith("/tmp/")]
    assert files, "the tensorflow[and-cuda] install has no constraints file of its own"
    pins = {k: v for f in files for k, v in exact_pins(ROOT / f).items()}
    assert [name for name in AND_CUDA if name not in pins] == []
    copied = re.findall(r"^COPY (?!--from)(.+?) \S+$", (ROOT / "Dockerfile.gpu").read_text(), re.MULTILINE)
    assert all(f in " ".join(copied) for f in files), "the constraints file is not copied into the build stage"
    assert all(f"!{f}" in (ROOT / ".dockerignore").read_text().split() for f in files)


def test_gpu_image_leaves_the_gpu_choice_to_the_device_plugin():
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile.gpu").read_text())
    env = " ".join(re.findall(r"^ENV (.+)$", text, re.MULTILINE))
    assert "NVIDIA_VISIBLE_DEVICES" not in env
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in env
