"""Dockerfile.cpu / Dockerfile.gpu, checked by parsing (no container engine runs here): one target per step
image the Makefile builds and the Argo YAML runs, `mammo <step>` entrypoints, non-root users, pinned bases."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from common import steps

ROOT = Path(__file__).resolve().parents[2]


def make_variable(name: str) -> list[str]:
    """The variable as make evaluates it (IMAGE_STEPS and GPU_STEPS come from the step registry)."""
    result = subprocess.run(["make", "-s", "--no-print-directory", "--eval", "print-%: ; @echo $($*)",
                             f"print-{name}"], cwd=ROOT, capture_output=True, text=True, check=True)
    return result.stdout.split()


def stages(dockerfile: str) -> dict[str, dict]:
    """Each build stage: its base, and the USER / ENTRYPOINT / ENV lines it sets (continuations joined)."""
    text = re.sub(r"\\\n", " ", (ROOT / dockerfile).read_text())
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.MULTILINE))
    result: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if match := re.match(r"FROM (\S+) AS (\S+)", line, re.IGNORECASE):
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], match[1])
            current = result[match[2]] = {"base": base, "user": None, "entrypoint": None, "env": []}
        elif current is not None and (match := re.match(r"(USER|ENTRYPOINT|ENV) (.+)", line)):
            key = match[1].lower()
            if key == "env":
                current["env"].append(match[2])
            else:
                current[key] = match[2]
    return result


def effective(stage_map: dict[str, dict], name: str, key: str):
    stage = stage_map[name]
    while stage[key] is None and stage["base"] in stage_map:
        stage = stage_map[stage["base"]]
    return stage[key]


def test_the_makefile_builds_the_registry_images():
    assert make_variable("IMAGE_STEPS") == steps.image_steps()
    assert make_variable("GPU_STEPS") == steps.gpu_image_steps()


@pytest.mark.parametrize("dockerfile,listed", [("Dockerfile.cpu", steps.image_steps),
                                               ("Dockerfile.gpu", steps.gpu_image_steps)])
def test_every_step_has_a_non_root_target_with_its_entrypoint(dockerfile, listed):
    stage_map = stages(dockerfile)
    names = listed()
    assert names
    for step in names:
        assert step in stage_map, f"{dockerfile} has no target {step}"
        assert json.loads(effective(stage_map, step, "entrypoint")) == ["mammo", step]
        user = effective(stage_map, step, "user")
        assert user and re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), f"{step}: USER {user} is not a numeric non-root id"


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_bases_are_pinned_and_nothing_secret_is_baked_in(dockerfile):
    stage_map = stages(dockerfile)
    external = {s["base"] for s in stage_map.values() if s["base"] not in stage_map}
    assert external and all(re.search(r":\d+\.\d+\.\d+", base) for base in external), external
    text = (ROOT / dockerfile).read_text()
    assert not re.search(r"(?im)^\s*(ENV|ARG)\s+\S*(KEY|SECRET|PASSWORD|TOKEN)", text)
    copied = re.findall(r"^COPY (?!--from)(.+?) \S+$", text, re.MULTILINE)
    assert {p for line in copied for p in line.split()} <= {"constraints.txt", "constraints-gpu.txt", "pyproject.toml",
                                                             "common", "jobs"}
    assert "-c constraints.txt" in text or "constraints.txt" in text


def test_cpu_images_have_no_cuda_and_gpu_images_do():
    assert "cuda" not in (ROOT / "Dockerfile.cpu").read_text().lower().replace("no cuda", "")
    assert "tensorflow[and-cuda]" in (ROOT / "Dockerfile.gpu").read_text()


def test_every_image_the_argo_yaml_runs_has_a_target():
    cpu, gpu = stages("Dockerfile.cpu"), stages("Dockerfile.gpu")
    seen = {"cpu": set(), "gpu": set()}
    for name in ("full-pipeline.yaml", "retrain-cron.yaml"):
        obj = yaml.safe_load((ROOT / "argo" / name).read_text())
        spec = obj["spec"]["workflowSpec"] if obj["kind"] == "CronWorkflow" else obj["spec"]
        for template in spec["templates"]:
            if "container" not in template:
                continue
            image = template["container"]["image"]
            step = re.search(r"/mammo-([a-z0-9-]+):", image)[1]
            assert step in cpu, f"{image}: Dockerfile.cpu has no target {step}"
            seen["cpu"].add(step)
            if "'-gpu'" in image:
                assert step in gpu, f"{image}: Dockerfile.gpu has no target {step}"
                seen["gpu"].add(step)
    # The retraining DAG runs the model steps' own GPU images; its CPU steps run in the (CPU) retrain image.
    assert seen["gpu"] == set(steps.gpu_steps())
    assert seen["cpu"] == {s.image for s in steps.task_steps() if s.image}


def test_dockerignore_keeps_the_context_to_the_sources():
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*" and {"!common/", "!jobs/", "!pyproject.toml", "!constraints.txt"} <= set(lines)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_requirement_an_image_installs_is_pinned_in_constraints():
    """pip only constrains what it is asked for: a requirement missing from constraints.txt (as xlrd and openpyxl
    once were) goes into the images at whatever version is newest on build day."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {canonical(re.match(r"[A-Za-z0-9_.-]+", r)[0]) for r in
              [*project["dependencies"], *project["optional-dependencies"]["model"]]}
    pinned = {canonical(line.split("==")[0]) for line in (ROOT / "constraints.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    assert wanted - pinned == set()
