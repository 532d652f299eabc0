"""The shared test helpers: the `mammo` command line they build and the step markers they write."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from helpers import MAMMO, finish_step, mammo, mammo_command

from common.artifacts import require_success


def test_mammo_command_spells_options_as_the_cli_reads_them():
    command = mammo_command("pipeline run", "--force", profile="ci", work_dir=Path("/w"), tta=False, seed=None,
                            dry_run=True)  # fmt: skip
    assert command == [sys.executable, "-m", "jobs.cli", "pipeline", "run", "--force", "--profile", "ci",
                       "--work-dir", "/w", "--no-tta", "--dry-run"]  # fmt: skip
    assert list(MAMMO) == command[:3]


def test_a_finished_step_folder_is_what_a_real_step_leaves(tmp_path):
    folder = finish_step(tmp_path / "split-hospital", "split", {"cohort": "c.csv"})
    marker = require_success(folder)
    assert marker["step"] == "split" and marker["inputs"] == {"cohort": "c.csv"}
    assert json.loads((folder / "_SUCCESS.json").read_text()) == marker


def test_mammo_runs_this_checkout():
    result = mammo("--version")
    assert result.returncode == 0 and result.stdout.strip()
