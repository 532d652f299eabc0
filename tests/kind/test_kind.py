"""End to end on a throw-away kind cluster: Argo 4.x, manifests/overlays/dev (MinIO, Pushgateway), the CPU
images, and argo/full-pipeline.yaml with the ci profile on CPU. See README.md in this folder.

Needs a running Docker daemon, `kind`, `kubectl` and the `argo` CLI, and network access to pull the Argo,
MinIO, Pushgateway and Python base images; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from harness import NAMESPACE, Submission, submissions, submit_and_wait

from common.profile import load_profile

pytestmark = pytest.mark.kind
ROOT = Path(__file__).resolve().parents[2]
ARGO_VERSION = os.environ.get("MAMMO_KIND_ARGO_VERSION", "v4.0.10")
ARGO_INSTALL = f"https://github.com/argoproj/argo-workflows/releases/download/{ARGO_VERSION}/install.yaml"
REGISTRY, TAG = "kind.local", "kind"
PIPELINE_TIMEOUT = os.environ.get("MAMMO_KIND_TIMEOUT", "90m")


def missing_tools() -> list[str]:
    missing = [tool for tool in ("docker", "kind", "kubectl", "argo") if shutil.which(tool) is None]
    if "docker" not in missing:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True)
        if info.returncode != 0:
            missing.append("a running Docker daemon")
    return missing


def run(*cmd: str, timeout: float = 1800, check: bool = True) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


def make_variable(name: str) -> list[str]:
    return re.search(rf"^{name}\s*:?=\s*(.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)[1].split()


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    missing = missing_tools()
    if missing:
        pytest.skip(f"kind tests need {', '.join(missing)} (see tests/kind/README.md)")
    name = f"mammo-{uuid.uuid4().hex[:6]}"
    run("kind", "create", "cluster", "--name", name, "--wait", "180s")
    context = f"kind-{name}"
    try:
        run("kubectl", "--context", context, "create", "namespace", "argo")
        run("kubectl", "--context", context, "apply", "--server-side", "-n", "argo", "-f", ARGO_INSTALL)
        for deployment in ("workflow-controller", "argo-server"):
            run("kubectl", "--context", context, "-n", "argo", "rollout", "status", f"deploy/{deployment}",
                "--timeout=300s")
        for step in make_variable("IMAGE_STEPS"):
            image = f"{REGISTRY}/mammo-{step}:{TAG}"
            run("docker", "build", "-f", str(ROOT / "Dockerfile.cpu"), "--target", step, "-t", image, str(ROOT),
                timeout=3600)
            run("kind", "load", "docker-image", image, "--name", name)
        run("kubectl", "--context", context, "apply", "-k", str(ROOT / "manifests/overlays/dev"))
        for deployment in ("minio", "mammo-pushgateway"):
            run("kubectl", "--context", context, "-n", "mammo", "rollout", "status", f"deploy/{deployment}",
                "--timeout=300s")
        run("kubectl", "--context", context, "-n", "mammo", "wait", "--for=condition=complete",
            "job/minio-create-bucket", "--timeout=300s")
        yield context
    finally:
        run("kind", "delete", "cluster", "--name", name, check=False)


@contextmanager
def port_forward(context: str, service: str, port: int) -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
    process = subprocess.Popen(["kubectl", "--context", context, "-n", "mammo", "port-forward", f"svc/{service}",
                                f"{local}:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", local)) == 0:
                    break
            time.sleep(0.5)
        yield local
    finally:
        process.terminate()
        process.wait(timeout=10)


def s3_client(port: int):
    import boto3

    dev = yaml.safe_load((ROOT / "manifests/overlays/dev/kustomization.yaml").read_text())
    credentials = dict(item.split("=", 1) for item in dev["secretGenerator"][0]["literals"])
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id=credentials["accesskey"], aws_secret_access_key=credentials["secretkey"])


def succeeded(context: str, name: str) -> dict:
    status = json.loads(run("argo", "--context", context, "-n", NAMESPACE, "get", name, "--output", "json"))
    assert status["status"]["phase"] == "Succeeded", status["status"].get("message")
    return status


def pipeline_runs(context: str, retrain: dict[str, str] | None = None) -> dict[str, Submission]:
    return {s.label: s for s in submissions((REGISTRY, TAG), load_profile("ci").synth.patients, context,
                                            retrain)}


@pytest.fixture(scope="module")
def pipeline_run(cluster) -> str:
    """The Workflow file submitted as the README writes it (plus the kind image and ci settings)."""
    name = submit_and_wait(pipeline_runs(cluster)["workflow file"], cluster, PIPELINE_TIMEOUT)
    succeeded(cluster, name)
    return name


def test_full_pipeline_on_cpu_with_the_ci_profile(cluster, pipeline_run):
    name = pipeline_run
    with port_forward(cluster, "minio", 9000) as port:
        s3 = s3_client(port)
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="mammo", Prefix=f"{name}/report/").get("Contents", [])}
        assert {f"{name}/report/report.html", f"{name}/report/summary.json", f"{name}/report/_SUCCESS.json"} <= keys
        summary = json.loads(s3.get_object(Bucket="mammo", Key=f"{name}/report/summary.json")["Body"].read())
        assert summary

    with port_forward(cluster, "mammo-pushgateway", 9091) as port:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    from prometheus_client.parser import text_string_to_metric_families

    samples = {(s.name, s.labels.get("job"), s.labels.get("task")): s.value
               for family in text_string_to_metric_families(text) for s in family.samples
               if s.labels.get("pipeline") == "mammo-full-pipeline"}
    assert samples[("mammo_step_success", "mammo_report", "report")] == 1.0
    assert samples[("mammo_step_success", "mammo_finetune_stage2", "finetune2-stage2")] == 1.0
    assert samples[("mammo_workflow_success", "mammo_workflow", None)] == 1.0


def test_the_installed_workflow_template_runs(cluster, pipeline_run):
    name = submit_and_wait(pipeline_runs(cluster)["workflow template"], cluster, PIPELINE_TIMEOUT)
    succeeded(cluster, name)


def test_a_manual_trigger_of_the_retraining_cron(cluster, pipeline_run):
    """New studies = the pipeline run's synthetic hospital, seed champion = its fine-tuned model."""
    with port_forward(cluster, "minio", 9000) as port:
        s3 = s3_client(port)
        prefix = f"{pipeline_run}/synth-hospital/"
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="mammo", Prefix=prefix):
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix):]
                target = f"kind/incoming/{relative[len('dicom/'):]}" if relative.startswith("dicom/") else None
                if relative == "cohort.csv":
                    target = "kind/cohort.csv"
                if target:
                    s3.copy_object(Bucket="mammo", Key=target, CopySource={"Bucket": "mammo", "Key": item["Key"]})
    retrain = {"hospital": "s3://mammo/kind/incoming/", "cohort": "s3://mammo/kind/cohort.csv",
               "registry": "s3://mammo/kind/models/", "state": "s3://mammo/kind/retrain/", "min-new-studies": "1",
               "seed-champion": f"s3://mammo/{pipeline_run}/finetune2-stage2/"}
    name = submit_and_wait(pipeline_runs(cluster, retrain)["retraining cron (manual trigger)"], cluster,
                           PIPELINE_TIMEOUT)
    succeeded(cluster, name)
    with port_forward(cluster, "minio", 9000) as port:
        s3 = s3_client(port)
        state = json.loads(s3.get_object(Bucket="mammo", Key="kind/retrain/state.json")["Body"].read())
        assert state["ingested"] and state["last_success_unixtime"]
