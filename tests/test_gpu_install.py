"""`make run GPU=1` installs TensorFlow's CUDA wheels in its own venv; the CPU default is untouched.

No GPU here: the dry run (`make -n`) is checked, and the requirement list the GPU recipe computes is run
for real to prove it drops tensorflow-cpu and keeps every other dependency.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dry_run(*args: str) -> list[str]:
    # A fresh stamp target name forces make to print the install recipe even where the venv exists.
    result = subprocess.run(["make", "-n", "-B", "run", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    # Under an outer make (make test) the inner one also prints its make[N] directory lines.
    return [line for line in result.stdout.splitlines() if not line.startswith("make[")]


def test_cpu_default_is_unchanged():
    lines = dry_run()
    assert any("pip install -q -e '.[test]'" in line for line in lines)
    assert not any("and-cuda" in line or ".venv-gpu" in line for line in lines)
    assert lines[-1].startswith(".venv/bin/mammo pipeline run --profile demo")


def test_gpu_switch_installs_cuda_tensorflow_in_its_own_venv(tmp_path):
    text = "\n".join(dry_run("GPU=1"))
    assert "'tensorflow[and-cuda]>=2.18,<3'" in text and "--no-deps -e ." in text
    assert ".venv-gpu/bin/mammo pipeline run" in text and "pip install -q -e '.[test]'" not in text
    snippet = re.search(r'-c "(import tomllib.*?)" >', text, re.DOTALL).group(1).replace("\\\n", "")
    listed = subprocess.run([sys.executable, "-c", snippet], cwd=ROOT, capture_output=True, text=True, check=True)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = project["optional-dependencies"]
    extras = [d for k in ("model", "argo", "test") for d in extra[k] if not d.startswith("mammo-")]  # no self-reference
    expected = [d for d in project["dependencies"] + extras if not d.startswith("tensorflow-cpu")]
    assert listed.stdout.split("\n")[:-1] == expected
    assert len(expected) == len(project["dependencies"]) + len(extras) - 1
