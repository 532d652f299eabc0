"""The local runner on real steps: it reruns exactly what a change affects, and nothing else.

A six-task slice of the synthetic DAG (synth, preprocess, split for two domains) on a tiny profile keeps
each run at seconds. What reran is read from the folders themselves (their `_SUCCESS.json` changed or
not), not only from the runner's own lines.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from common import pipeline, runner
from common.profile import load_profile

SLICE = ("synth-film", "synth-hospital", "preprocess-film", "preprocess-hospital", "split-film", "split-hospital")
pytestmark = pytest.mark.slow


def _write_profile(path: Path, **changes) -> Path:
    data = load_profile("ci").to_dict()
    data["synth"] = {"size": {"height": 256, "width": 200}, "patients": {"film": 6, "ffdm": 6, "hospital": 6}}
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        section = data
        for part in parents:
            section = section[part]
        section[key] = value
    path.write_text(yaml.safe_dump(data))
    return path


def _slice(profile: Path) -> list[pipeline.Task]:
    return [task for task in pipeline.tasks("synthetic", str(profile)) if task.name in SLICE]


def _markers(workdir: Path) -> dict[str, str]:
    return {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in workdir.glob("*/_SUCCESS.json")}


def _run(tasks, workdir: Path, **options) -> tuple[set[str], list[str]]:
    """Run; returns the tasks whose folder changed, and the runner's lines."""
    before = _markers(workdir)
    lines: list[str] = []
    runner.run_tasks(tasks, workdir, echo=lines.append, **options)
    after = _markers(workdir)
    assert set(after) >= set(before)
    changed = {name for name in after if before.get(name) != after[name]}
    said = {line.split("] ", 1)[1].split(":")[0] for line in lines if ": runs (" in line}
    assert said == changed, lines  # the runner's lines tell the truth
    return changed, lines


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A work folder on which the slice ran once, and its profile."""
    root = tmp_path_factory.mktemp("runner")
    profile = _write_profile(root / "tiny.yaml")
    changed, _ = _run(_slice(profile), root / "work")
    assert changed == set(SLICE)
    return root / "work", profile


@pytest.fixture
def copy(finished, tmp_path):
    """A copy of the finished work folder (moving a work folder must keep it up to date)."""
    workdir, profile = finished
    shutil.copytree(workdir, tmp_path / "work", symlinks=True)
    return tmp_path / "work", shutil.copy(profile, tmp_path / "tiny.yaml")


def test_nothing_changed_nothing_reruns_even_in_a_moved_folder(copy):
    workdir, profile = copy
    changed, lines = _run(_slice(Path(profile)), workdir)
    assert changed == set()
    assert sum(runner.SKIPPED in line for line in lines) == len(SLICE)


def test_a_profile_value_reruns_only_the_steps_reading_it_and_their_descendants(copy):
    workdir, profile = copy
    _write_profile(Path(profile), split__seed=7)
    changed, lines = _run(_slice(Path(profile)), workdir)
    assert changed == {"split-film", "split-hospital"}
    assert any("split-film: runs (changed: profile split.seed)" in line for line in lines)
    _write_profile(Path(profile), split__seed=7, synth__patients__hospital=4)
    changed, lines = _run(_slice(Path(profile)), workdir)
    assert changed == {"synth-hospital", "preprocess-hospital", "split-hospital"}
    assert any("preprocess-hospital: runs (synth-hospital reruns)" in line for line in lines)
    cohort = (workdir / "split-hospital" / "split.csv").read_text().splitlines()
    assert len(cohort) == 1 + 4  # the new run's result, not the old one's


def test_a_step_argument_reruns_that_task_and_its_descendants(copy):
    workdir, profile = copy
    tasks = _slice(Path(profile))
    synth = next(t for t in tasks if t.name == "synth-film")
    args = tuple((option, "99" if option == "--seed" else value) for option, value in synth.args)
    tasks = [dataclasses.replace(t, args=args) if t is synth else t for t in tasks]
    changed, lines = _run(tasks, workdir)
    assert changed == {"synth-film", "preprocess-film", "split-film"}
    assert any("synth-film: runs (changed: argument --seed)" in line for line in lines)


def test_force_reruns_everything_and_from_reruns_a_task_and_its_descendants(copy):
    workdir, profile = copy
    tasks = _slice(Path(profile))
    changed, _ = _run(tasks, workdir, start="synth-hospital")
    assert changed == {"synth-hospital", "preprocess-hospital", "split-hospital"}
    splits = [t for t in tasks if t.step == "split"]  # the cheap ones
    changed, lines = _run(splits, workdir, force=True)
    assert changed == {t.name for t in splits} and all("(--force)" in line for line in lines if "runs" in line)
    with pytest.raises(runner.UnusableInput, match="no such task"):
        runner.run_tasks(tasks, workdir, start="nope")


def test_one_changed_input_file_reruns_only_the_steps_reading_it(finished, tmp_path):
    """Real mode: the hospital's own DICOM folder and cohort file are external inputs."""
    workdir, profile = finished
    hospital = tmp_path / "hospital"
    shutil.copytree(workdir / "synth-hospital", hospital)
    (hospital / "_SUCCESS.json").unlink()  # a hospital's folder, not a step's
    params = {"hospital_dicom": str(hospital / "dicom"), "hospital_cohort": str(hospital / "cohort.csv"),
              "model": str(tmp_path / "model")}
    tasks = [t for t in pipeline.tasks("real", str(profile), params) if t.name in SLICE]
    assert [t.name for t in tasks] == ["preprocess-hospital", "split-hospital"]
    work = tmp_path / "work"
    assert _run(tasks, work)[0] == {"preprocess-hospital", "split-hospital"}
    image = sorted((hospital / "dicom").rglob("*.dcm"))[0]
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # one DICOM replaced
    changed, lines = _run(tasks, work)
    assert changed == {"preprocess-hospital"}, lines
    assert any("preprocess-hospital: runs (changed: input --input)" in line for line in lines)
    cohort = hospital / "cohort.csv"
    cohort.write_text(cohort.read_text())  # rewritten, same content: files count by content
    assert _run(tasks, work)[0] == set()
    frame = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    frame.loc[0, "age"] = "99"
    frame.to_csv(cohort, index=False)
    assert _run(tasks, work)[0] == {"preprocess-hospital", "split-hospital"}
