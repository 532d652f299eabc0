"""Sharded CPU steps (common.shards): the plan, and shards + merge giving exactly the output of one unsharded run,
with duplicates across shards, rejected files and four-view flags decided over the whole set; a rerun redoes
only the failed shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common import fingerprint, shards, workfolder
from common.artifacts import SUCCESS
from common.preprocess import preprocess_folder
from common.profile import load_profile
from jobs.cli import main

COHORT = "patient_id,age,label,pair_id,cancer_laterality\nC1,52,1,x,R\nC2,,0,x,\nC3,70,0,,\nC4,61,0,,\n"


def test_plan_caps_the_shard_count_by_the_data_size():
    assert shards.plan(1000, 4, 50) == [{"index": i, "count": 4} for i in range(4)]
    assert len(shards.plan(120, 4, 50)) == 2  # 60 per shard: a third would get 40 < 50
    assert shards.plan(10, 4, 50) == [{"index": 0, "count": 1}]
    assert shards.members(list("abcdefg"), 1, 3) == ["b", "e"]
    covered = sorted(x for i in range(3) for x in shards.members(list(range(10)), i, 3))
    assert covered == list(range(10))
    with pytest.raises(ValueError):
        shards.plan(10, 0, 5)


@pytest.fixture
def dicoms(tmp_path, mg_dicom, breast_image):
    """Ten files: four views of C1 and C4, a duplicate of C1_L_CC late in path order, C2 with one view, a patient
    not in the cohort and a broken file, so the shards disagree about what is first and what is rejected."""
    data = tmp_path / "in"
    for patient in ("C1", "C4"):
        for index, (laterality, view) in enumerate([("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO")]):
            stored = np.rint(breast_image(seed=index) * 4095).astype(np.uint16)
            stored = stored[:, ::-1] if laterality == "R" else stored
            mg_dicom(data / patient / f"{laterality}_{view}.dcm", np.ascontiguousarray(stored), BitsStored=12,
                     PatientID=patient, ImageLaterality=None, ViewPosition=None, PixelSpacing=[0.1, 0.1])
    mg_dicom(data / "z_copy" / "again.dcm", PatientID="C1", ImageLaterality="L", ViewPosition="CC")
    mg_dicom(data / "C2" / "1.dcm", PatientID="C2", ImageLaterality="L", ViewPosition="MLO", PatientAge="061Y")
    mg_dicom(data / "C9" / "1.dcm", PatientID="C9")
    (data / "broken.dcm").write_bytes(b"not a dicom")
    cohort = tmp_path / "cohort.csv"
    cohort.write_text(COHORT)
    return data, cohort


def folder_contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != SUCCESS}


def test_shards_and_merge_equal_one_unsharded_run(tmp_path, dicoms, capfd):
    data, cohort = dicoms
    whole = tmp_path / "whole"
    preprocess_folder(data, cohort, whole, load_profile("ci"), workers=1)
    sharded = tmp_path / "sharded.shards"
    for index in range(3):
        assert main(["preprocess", "--input", str(data), "--cohort", str(cohort), "--out", str(sharded / str(index)),
                     "--profile", "ci", "--workers", "1", "--shard", f"{index}/3"]) == 0
        assert not (sharded / str(index) / "images.csv").exists()  # a shard is not a step output
    merged = tmp_path / "sharded"
    assert main(["preprocess", "--merge-shards", str(sharded), "--cohort", str(cohort), "--out", str(merged),
                 "--profile", "ci"]) == 0
    expected = folder_contents(whole)
    assert len([k for k in expected if k.startswith("images/")]) == 9
    assert folder_contents(merged) == expected  # images.csv, rejected.csv and every PNG byte for byte
    assert "duplicate view: C1_L_CC already taken by C1/L_CC.dcm" in (merged / "rejected.csv").read_text()
    record = json.loads((merged / SUCCESS).read_text())
    assert record["counts"]["files"] == 12 and record["counts"]["rejected"] == 3 and record["merged_shards"] == 3


def test_merge_refuses_an_incomplete_plan(tmp_path, dicoms, capfd):
    data, cohort = dicoms
    sharded = tmp_path / "t.shards"
    for index in (0, 2):
        assert main(["preprocess", "--input", str(data), "--cohort", str(cohort), "--out", str(sharded / str(index)),
                     "--profile", "ci", "--workers", "1", "--shard", f"{index}/3"]) == 0
    capfd.readouterr()
    out = tmp_path / "t"
    assert main(["preprocess", "--merge-shards", str(sharded), "--cohort", str(cohort), "--out", str(out),
                 "--profile", "ci"]) == 2
    assert "shard(s) [1] of 3 did not finish" in capfd.readouterr().err
    assert not (out / SUCCESS).exists()
    assert main(["preprocess", "--input", str(data), "--cohort", str(cohort), "--out", str(out),
                 "--profile", "ci", "--shard", "3/3"]) == 2


def test_local_rerun_redoes_only_the_failed_shard(tmp_path, dicoms, monkeypatch):
    data, cohort = dicoms
    out = tmp_path / "preprocess-hospital"
    argv = ["preprocess", "--input", str(data), "--cohort", str(cohort), "--out", str(out), "--profile", "ci"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    # Two shards from the 4-patient cohort (2 patients per shard at least, here); shard 1 cannot write its folder.
    sharded = shards.SHARDED_STEPS["preprocess"]
    monkeypatch.setitem(shards.SHARDED_STEPS, "preprocess",
                        shards.ShardedStep(sharded.size_arg, sharded.size_file, 2, sharded.merge_drops))
    blocker = tmp_path / "preprocess-hospital.shards" / "1"
    blocker.parent.mkdir()
    blocker.write_text("a file where the shard's folder should go")
    assert shards.run_local("preprocess", argv, env, echo=lambda _: None, requested=2) != 0
    assert not (out / SUCCESS).exists()
    done = blocker.parent / "0" / SUCCESS
    assert done.is_file()
    stamp = done.stat().st_mtime_ns
    blocker.unlink()
    lines = []
    assert shards.run_local("preprocess", argv, env, echo=lines.append, requested=2) == 0
    assert done.stat().st_mtime_ns == stamp  # shard 0 was kept, not recomputed
    assert any("shard 0/2: done earlier, kept" in line for line in lines)
    whole = tmp_path / "whole"
    preprocess_folder(data, cohort, whole, load_profile("ci"), workers=1)
    assert folder_contents(out) == folder_contents(whole)


def test_shards_with_an_image_table_equal_one_unsharded_run(tmp_path, dicoms, capfd):
    """With `mammo cohort`'s image table: its own rejections appear once, per-image labels survive the merge."""
    data, cohort = dicoms
    table = tmp_path / "image_table.csv"
    table.write_text("file,patient_id,laterality,view,label\n"
                     "C1/L_CC.dcm,C1,L,CC,1\nC1/R_CC.dcm,C1,R,CC,0\nC4/L_MLO.dcm,C4,L,MLO,0\nC4/R_MLO.dcm,C4,R,MLO,1\n"
                     "missing.dcm,C4,L,CC,0\nC9/1.dcm,C9,L,CC,0\n")
    whole = tmp_path / "whole"
    preprocess_folder(data, cohort, whole, load_profile("ci"), workers=1, image_table=table)
    parts = tmp_path / "t.shards"
    for index in range(2):
        assert main(["preprocess", "--input", str(data), "--cohort", str(cohort), "--image-table", str(table),
                     "--out", str(parts / str(index)), "--profile", "ci", "--workers", "1",
                     "--shard", f"{index}/2"]) == 0
    merged = tmp_path / "t"
    assert main(["preprocess", "--merge-shards", str(parts), "--cohort", str(cohort), "--out", str(merged),
                 "--profile", "ci"]) == 0
    assert folder_contents(merged) == folder_contents(whole)
    assert len((merged / "images.csv").read_text().splitlines()) == 1 + 4
    assert "C1_R_CC,C1,R,CC,0" in (merged / "images.csv").read_text()  # the table's label, not the cohort's
    rejected = (merged / "rejected.csv").read_text()
    assert rejected.count("missing.dcm") == 1 and rejected.count("C9/1.dcm") == 1


def _two_shards(monkeypatch) -> None:
    sharded = shards.SHARDED_STEPS["preprocess"]
    monkeypatch.setitem(shards.SHARDED_STEPS, "preprocess",
                        shards.ShardedStep(sharded.size_arg, sharded.size_file, 2, sharded.merge_drops))


def test_the_merge_records_the_tasks_own_fingerprint(tmp_path, dicoms, monkeypatch):
    """Nobody patches the merged folder afterwards: its `_SUCCESS.json` alone tells a rerun that it is up to date,
    and a changed input makes every shard stale (none is kept from the other input)."""
    data, cohort = dicoms
    out = tmp_path / "preprocess-hospital"
    argv = ["preprocess", "--input", str(data), "--cohort", str(cohort), "--out", str(out), "--profile", "ci"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    _two_shards(monkeypatch)
    assert shards.run_local("preprocess", argv, env, echo=lambda _: None, requested=2) == 0
    assert fingerprint.explain(fingerprint.recorded(out), fingerprint.of_argv(argv)) is None
    (data / "C3").mkdir()
    (data / "C3" / "late.dcm").write_bytes(b"arrived after the first run")
    assert fingerprint.explain(fingerprint.recorded(out), fingerprint.of_argv(argv)) == "changed: input --input"
    lines = []
    assert shards.run_local("preprocess", argv, env, echo=lines.append, requested=2) == 0
    assert not any("kept" in line for line in lines), lines
    assert "late.dcm" in (out / "rejected.csv").read_text()
    assert fingerprint.explain(fingerprint.recorded(out), fingerprint.of_argv(argv)) is None


RUNNER = """
import sys
from pathlib import Path
from common import runner
from common.pipeline import Param, Task
task = Task("preprocess-hospital", "preprocess", (("--input", Param("dicom")), ("--cohort", Param("cohort", "file")),
            ("--out", ""), ("--profile", "")), "ci", {"dicom": sys.argv[2], "cohort": sys.argv[3]})
try:
    runner.run_tasks([task], Path(sys.argv[1]))
except runner.Stopped as error:
    print(error, file=sys.stderr)
    sys.exit(error.exit_code)
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the local shard plan has one shard per core")
def test_stopping_the_runner_stops_every_shard_and_a_rerun_redoes_only_the_unfinished(tmp_path, mg_dicom,
                                                                                          breast_image):
    """SIGTERM to the runner during a sharded task: no shard (or its merge) is left running, nothing is published
    half-way; the rerun keeps the shards that finished and redoes the others."""
    data, cohort = tmp_path / "in", tmp_path / "cohort.csv"
    pixels = np.rint(breast_image() * 4095).astype(np.uint16)
    for i in range(300):  # two shards of 150 files: seconds of work each, well after the shards have started
        mg_dicom(data / f"f{i:03d}.dcm", pixels, BitsStored=12, PatientID=f"P{i:03d}", ImageLaterality="L",
                 ViewPosition="CC", PixelSpacing=[0.1, 0.1])
    cohort.write_text("patient_id,age,label,pair_id,cancer_laterality\n"
                      + "".join(f"P{i:03d},50,{i % 2},,{'L' if i % 2 else ''}\n" for i in range(300)))
    work = tmp_path / "work"
    parts, out = work / "preprocess-hospital.shards", work / "preprocess-hospital"
    command = [sys.executable, "-c", RUNNER, str(work), str(data), str(cohort)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        running = _wait_for(lambda: [p for p in (workfolder.holder_pid(parts / str(i)) for i in range(2))
                                     if p and _alive(p)] if (parts / "1").exists() else None, 120, "both shards")
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 128 + signal.SIGTERM
        assert "stopped by SIGTERM during task preprocess-hospital" in first.stderr.read()
        time.sleep(2)
        assert [pid for pid in running if _alive(pid)] == []  # no orphan shard still converting
    finally:
        if first.poll() is None:
            first.kill()
    markers = {i: parts / str(i) / SUCCESS for i in range(2)}
    finished = {i: marker.stat().st_mtime_ns for i, marker in markers.items() if marker.exists()}
    assert len(finished) < 2 and not (out / SUCCESS).exists()  # stopped part-way, nothing published
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    for i, stamp in finished.items():
        assert (parts / str(i) / SUCCESS).stat().st_mtime_ns == stamp  # kept, not recomputed
        assert f"shard {i}/2: done earlier, kept" in again.stdout
    assert len((out / "images.csv").read_text().splitlines()) == 1 + 300
    assert json.loads((out / SUCCESS).read_text())["merged_shards"] == 2


def test_the_plan_pod_reports_as_shard_plan_not_as_the_step_it_plans(tmp_path, monkeypatch, capfd):
    """`--step` must not overwrite the CLI's own step name: it names the Pushgateway job and the log lines."""
    from common import telemetry

    pushed = []
    monkeypatch.setattr(telemetry, "_push", lambda job, grouping, *rest: pushed.append(job))
    (tmp_path / "cohort.csv").write_text(COHORT)
    plan = tmp_path / "plan.json"
    assert main(["shard-plan", "--step", "preprocess", "--rows", str(tmp_path / "cohort.csv"), "--shards", "4",
                 "--plan", str(plan)]) == 0
    assert json.loads(plan.read_text()) == [{"index": 0, "count": 1}]
    assert pushed == ["mammo_shard_plan"]
    assert capfd.readouterr().err.splitlines()[-1].startswith("mammo shard-plan: ")
