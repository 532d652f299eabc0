"""Progress in a log is plain lines every 10%, never carriage-return redraws; a terminal keeps its bar."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import MAMMO
from tqdm import tqdm

from common.progress import progress_bar, track

ROOT = Path(__file__).resolve().parents[1]


def test_log_lines_every_ten_percent(capsys):
    with progress_bar(160, "preprocess", "file") as bar:
        for _ in range(160):
            bar.update()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"preprocess: {16 * k}/160 files" for k in range(1, 11)]
    assert lines[-1].startswith("preprocess: 160/160 files (100%), ")


def test_few_items_one_line_each_and_disabled_is_silent(capsys):
    assert list(track(range(3), 3, "scoring", "batch")) == [0, 1, 2]
    assert [line.split(", ")[0] for line in capsys.readouterr().err.splitlines()] == [
        "scoring: 1/3 batches (33%)", "scoring: 2/3 batches (66%)", "scoring: 3/3 batches (100%)"]
    assert list(track(range(3), 3, "scoring", "batch", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_a_resumed_run_counts_from_what_was_done(capsys):
    with progress_bar(10, "preprocess", "file", initial=4) as bar:
        for _ in range(6):
            bar.update()
    assert [line.split(" (")[0] for line in capsys.readouterr().err.splitlines()] == [
        f"preprocess: {k}/10 files" for k in range(5, 11)]


def test_a_terminal_gets_the_bar(monkeypatch):
    main, secondary = os.openpty()
    with os.fdopen(secondary, "w") as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        bar = progress_bar(5, "radiomics", "image")
        assert isinstance(bar, tqdm)
        bar.close()
    os.close(main)


@pytest.mark.slow
def test_preprocess_reports_progress_in_a_log(tmp_path):
    mammo = list(MAMMO)
    synth = subprocess.run([*mammo, "synth", "--domain", "hospital", "--patients", "4", "--profile", "ci",
                            "--out", str(tmp_path / "synth")], cwd=ROOT, capture_output=True, text=True)
    assert synth.returncode == 0 and "\r" not in synth.stderr
    assert "synth hospital: 4/4 patients (100%)" in synth.stderr
    result = subprocess.run([*mammo, "preprocess", "--input", str(tmp_path / "synth" / "dicom"), "--cohort",
                             str(tmp_path / "synth" / "cohort.csv"), "--out", str(tmp_path / "pre"), "--profile",
                             "ci"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr
    progress = [line for line in result.stderr.splitlines() if line.startswith("preprocess: ") and "%)" in line]
    assert len(progress) == 10 and progress[-1].startswith("preprocess: 16/16 files (100%)")
