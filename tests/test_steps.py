"""The step registry (common.steps): the one table the CLI, the pipeline, Argo, the Makefile and the Dockerfile
checks read, so its rows must name real modules and images that are built."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from common import steps

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(steps.STEPS))
def test_every_row_names_a_step_module(name):
    step = steps.STEPS[name]
    assert step.name == name and step.summary
    module = importlib.import_module(step.module)
    assert callable(module.run) and callable(module.add_arguments) and module.HELP


def test_every_image_a_step_runs_in_is_built_and_gpu_steps_have_gpu_images():
    built, gpu_built = set(steps.image_steps()), set(steps.gpu_image_steps())
    assert gpu_built <= built
    for step in steps.STEPS.values():
        assert step.image is None or step.image in built, step.name
        if step.resources is not None and step.resources.gpu:
            assert step.image in gpu_built, f"{step.name} requests a GPU but has no GPU image"
        assert not step.multi_gpu or (step.resources is not None and step.resources.gpu), step.name


def test_the_command_prints_the_lists_the_makefile_reads():
    for kind, expected in (("images", steps.image_steps()), ("gpu-images", steps.gpu_image_steps())):
        out = subprocess.run([sys.executable, "-m", "common.steps", kind], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
        assert out.split() == expected
    bad = subprocess.run([sys.executable, "-m", "common.steps", "nonsense"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_the_registry_module_imports_only_the_standard_library():
    code = "import sys, common.steps; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "{'numpy', 'pandas', 'yaml', 'tensorflow', 'jobs'}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
