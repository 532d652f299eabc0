"""manifests/: both overlays build with kustomize, built-in kinds pass kubernetes-validate --strict, the Argo
objects pass the Hera checks, and no credential is written anywhere but the dev overlay."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from argo_checks import KINDS, semantic_problems, unknown_fields

from jobs.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_VERSION = "1.32.0"
OVERLAYS = ("dev", "prod")


@pytest.fixture(scope="module")
def built(kustomize_builds) -> dict[str, list[dict]]:
    return kustomize_builds


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_kinds_validate_strictly(built, overlay):
    checked = 0
    for obj in built[overlay]:
        if obj["apiVersion"].startswith("argoproj.io/"):
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 10


def test_strict_validation_catches_unknown_fields(built):
    deployment = dict(by_kind(built["dev"], "Deployment")["mammo-pushgateway"])
    deployment["spec"] = {**deployment["spec"], "replica": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_argo_objects_in_the_build(built, overlay):
    parser = build_parser()
    argo = [o for o in built[overlay] if o["apiVersion"].startswith("argoproj.io/")]
    assert sorted(o["kind"] for o in argo) == ["CronWorkflow", "WorkflowTemplate"]
    for obj in argo:
        assert unknown_fields(KINDS[obj["kind"]], obj) == []
        assert semantic_problems(obj, parser) == []
        assert obj["metadata"]["namespace"] == "mammo"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_what_the_workflows_refer_to_exists(built, overlay):
    objects = built[overlay]
    namespaced = [o for o in objects if o["kind"] != "Namespace"]
    assert {o["metadata"].get("namespace") for o in namespaced} == {"mammo"}
    assert "mammo-workflow" in by_kind(objects, "ServiceAccount")
    [rule] = by_kind(objects, "Role")["mammo-workflow-executor"]["rules"]
    assert rule["resources"] == ["workflowtaskresults"] and set(rule["verbs"]) == {"create", "patch"}
    repositories = by_kind(objects, "ConfigMap")["artifact-repositories"]
    assert repositories["metadata"]["annotations"]["workflows.argoproj.io/default-artifact-repository"] == "default-v1"
    s3 = yaml.safe_load(repositories["data"]["default-v1"])["s3"]
    assert s3["accessKeySecret"] == {"name": "mammo-s3", "key": "accesskey"}
    assert s3["secretKeySecret"] == {"name": "mammo-s3", "key": "secretkey"}
    service = by_kind(objects, "Service")["mammo-pushgateway"]
    template = by_kind(objects, "WorkflowTemplate")["mammo-full-pipeline"]
    default_url = {p["name"]: p["value"] for p in template["spec"]["arguments"]["parameters"]}["pushgateway-url"]
    assert default_url == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    assert by_kind(objects, "NetworkPolicy")


def test_dev_runs_minio_and_prod_points_outside(built):
    dev_s3 = yaml.safe_load(by_kind(built["dev"], "ConfigMap")["artifact-repositories"]["data"]["default-v1"])["s3"]
    minio = by_kind(built["dev"], "Service")["minio"]
    minio_host = f"{minio['metadata']['name']}.{minio['metadata']['namespace']}.svc.cluster.local"
    assert dev_s3["endpoint"] == f"{minio_host}:{minio['spec']['ports'][0]['port']}" and dev_s3["insecure"] is True
    assert set(by_kind(built["dev"], "Secret")["mammo-s3"]["data"]) == {"accesskey", "secretkey"}
    assert "minio-create-bucket" in by_kind(built["dev"], "Job")
    assert "minio-data" in by_kind(built["dev"], "PersistentVolumeClaim")

    prod_s3 = yaml.safe_load(by_kind(built["prod"], "ConfigMap")["artifact-repositories"]["data"]["default-v1"])["s3"]
    assert prod_s3["insecure"] is False and "minio" not in prod_s3["endpoint"]
    assert by_kind(built["prod"], "Secret") == {} and "minio" not in by_kind(built["prod"], "Deployment")
    cron = by_kind(built["prod"], "CronWorkflow")["mammo-retrain"]
    locations = [p["value"] for p in cron["spec"]["workflowSpec"]["arguments"]["parameters"]
                 if p["value"].startswith("s3://")]
    assert locations and all(v.startswith(f"s3://{prod_s3['bucket']}/") for v in locations)


# Files that end up in a cluster or an image; the dev overlay is the one place allowed to hold (dev) secrets.
DEPLOYED = ["manifests", "argo", "Dockerfile.cpu", "Dockerfile.gpu", "Makefile", "common", "jobs", ".ci",
            "constraints.txt", "pyproject.toml"]
CREDENTIAL = re.compile(
    r"(?i)(AKIA[0-9A-Z]{16}"  # an AWS access key id
    r"|(secret|password|secretkey|accesskey|access_key|secret_key|token)[\"']?\s*[:=]\s*[\"']?(?!\$|\{\{|\s|$)"
    r"[A-Za-z0-9/+=_-]{6,}"  # a literal value assigned to a credential-like key
    r"|literals:\s*$)"  # a kustomize secret generator with literal values
)


def deployed_files() -> list[Path]:
    files = []
    for entry in DEPLOYED:
        path = ROOT / entry
        candidates = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        files += [p for p in candidates if "overlays/dev" not in p.as_posix() and "__pycache__" not in p.parts]
    return files


def test_no_credential_literal_outside_the_dev_overlay():
    dev = yaml.safe_load((ROOT / "manifests/overlays/dev/kustomization.yaml").read_text())
    literals = [item.split("=", 1)[1] for gen in dev["secretGenerator"] for item in gen["literals"]]
    files = deployed_files()
    assert len(files) > 20 and any(p.name == "storage.yaml" for p in files)
    offending = []
    for path in files:
        text = path.read_text(errors="ignore")
        offending += [f"{path.relative_to(ROOT)}: {m[0]}" for m in CREDENTIAL.finditer(text)]
        offending += [f"{path.relative_to(ROOT)}: dev literal" for literal in literals if literal in text]
    assert offending == []


def test_the_credential_scan_finds_planted_secrets(tmp_path):
    planted = ["secretkey=abcdefgh123", 'password: "hunter2hunter2"', "AKIAABCDEFGHIJKLMNOP", "  literals:\n"]
    assert all(CREDENTIAL.search(text) for text in planted)
    harmless = ["key: secretkey", "secretKeySecret:", 'secret_key_ref=m.SecretKeySelector(name="mammo-s3")',
                "secretkey: ${SECRET}"]
    assert not any(CREDENTIAL.search(text) for text in harmless)
