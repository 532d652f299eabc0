"""`mammo pipeline run --seed`: another draw of the synthetic cohorts, the same model recipe."""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers import MAMMO

from common import pipeline

ROOT = Path(__file__).resolve().parents[1]


def _synth_seeds(plan) -> dict[str, str]:
    return {task.name: dict(task.args)["--seed"] for task in plan if task.step == "synth"}


def _non_synth(plan):
    return [(task.name, task.step, task.args) for task in plan if task.step != "synth"]


def test_seed_changes_every_synthetic_cohort_and_nothing_else():
    default = pipeline.tasks("synthetic", "ci")
    seeded = pipeline.tasks("synthetic", "ci", {"seed": 3})
    other = pipeline.tasks("synthetic", "ci", {"seed": 4})
    assert _synth_seeds(pipeline.tasks("synthetic", "ci", {"seed": 0})) == _synth_seeds(default)
    for name, seed in _synth_seeds(seeded).items():
        assert seed != _synth_seeds(default)[name] and seed != _synth_seeds(other)[name], name
    # Three domains of one run never share a seed, so they never share patients.
    assert len(set(_synth_seeds(seeded).values())) == 3
    assert _non_synth(seeded) == _non_synth(default)


def test_seed_with_real_data_is_a_usage_error(tmp_path):
    command = [*MAMMO, "pipeline", "plan", "--profile", "ci", "--workdir", str(tmp_path),
               "--dicom", str(tmp_path), "--cohort", str(tmp_path / "cohort.csv"), "--checkpoint", "x.h5",
               "--seed", "2"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "--seed" in result.stderr.splitlines()[0]
