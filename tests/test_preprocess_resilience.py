"""Preprocess under kills and odd file systems (issue 15, items 3 and 4): real processes, real signals, real
symlinks, FIFOs and permissions."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from helpers import MAMMO

from common.preprocess import preprocess_folder
from common.profile import load_profile

ROOT = Path(__file__).resolve().parents[1]
COHORT_HEADER = "patient_id,age,label,pair_id,cancer_laterality\n"
VIEWS = [("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO")]
PATIENTS = 7  # 28 files: enough work for a kill to land in the middle of the batch


@pytest.fixture(scope="module")
def study(tmp_path_factory, mg_dicom, breast_image) -> tuple[Path, Path]:
    """28 DICOMs of 7 patients, large enough (1400x1120) that each takes a visible fraction of a second."""
    base = tmp_path_factory.mktemp("study")
    lines = []
    for p in range(PATIENTS):
        patient = f"P{p:02d}"
        lines.append(f"{patient},{50 + p},0,,\n")
        for v, (laterality, view) in enumerate(VIEWS):
            stored = np.rint(breast_image(1400, 1120, seed=10 * p + v) * 4095).astype(np.uint16)
            mg_dicom(base / "in" / patient / f"{laterality}_{view}.dcm", stored, BitsStored=12,
                     PatientID=patient, ImageLaterality=laterality, ViewPosition=view)
    (base / "cohort.csv").write_text(COHORT_HEADER + "".join(lines))
    return base / "in", base / "cohort.csv"


@pytest.fixture(scope="module")
def reference(study, tmp_path_factory) -> Path:
    """The same study preprocessed once, undisturbed, in this process."""
    out = tmp_path_factory.mktemp("reference") / "out"
    preprocess_folder(*study, out, load_profile("ci"), workers=1)
    return out


def command(study: tuple[Path, Path], out: Path, workers: int = 2) -> list[str]:
    return [*MAMMO, "preprocess", "--input", str(study[0]), "--cohort", str(study[1]),
            "--out", str(out), "--profile", "ci", "--workers", str(workers)]


def finished_files(out: Path) -> list[Path]:
    """Files a worker has finished so far (whatever the layout of the unfinished run)."""
    return [p for p in out.rglob("*") if p.suffix in (".json", ".png") and p.name != "_SUCCESS.json"]


def wait_for(condition, process: subprocess.Popen, seconds: float = 300.0) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert process.poll() is None, f"finished (rc {process.returncode}) before the kill could land"
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def pool_workers(pid: int) -> list[int]:
    """The spawned worker processes of `pid` (not multiprocessing's resource tracker)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    workers = []
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            workers.append(child)
    return workers


def assert_same_outputs(out: Path, reference: Path) -> None:
    got = pd.read_csv(out / "images.csv", keep_default_na=False)
    expected = pd.read_csv(reference / "images.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(got, expected)
    assert pd.read_csv(out / "rejected.csv").empty
    for folder in ("images", "hires"):
        names = sorted(p.name for p in (out / folder).iterdir())
        assert names == sorted(p.name for p in (reference / folder).iterdir())
        for name in names:
            assert np.array_equal(cv2.imread(str(out / folder / name), cv2.IMREAD_UNCHANGED),
                                  cv2.imread(str(reference / folder / name), cv2.IMREAD_UNCHANGED)), name
    assert not [p for p in out.rglob("*") if p.name.startswith(".")], "temporary files left behind"


def test_leftover_pending_files_of_a_killed_run_do_not_break_the_rerun(tmp_path, study):
    out = tmp_path / "out"
    for folder in ("images", "hires"):
        (out / folder).mkdir(parents=True)
        (out / folder / ".pending-3.png").write_bytes(b"half")
        (out / folder / "OLD_L_CC.png").write_bytes(b"stale")
    counts = preprocess_folder(*study, out, load_profile("ci"), workers=1)
    assert counts["images"] == 4 * PATIENTS
    assert not list(out.rglob(".pending-*")) and not list(out.rglob("OLD_*"))


@pytest.mark.slow
def test_sigkill_of_one_pool_worker_costs_only_a_retry(tmp_path, study, reference):
    out = tmp_path / "out"
    process = subprocess.Popen(command(study, out), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        wait_for(lambda: len(finished_files(out)) >= 2 and len(pool_workers(process.pid)) == 2, process)
        victim = pool_workers(process.pid)[0]
        os.kill(victim, signal.SIGKILL)  # what the out-of-memory killer does
        _, err = process.communicate(timeout=600)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "BrokenProcessPool" not in err and "a worker process died; retrying" in err
    assert_same_outputs(out, reference)


@pytest.mark.slow
def test_rerun_after_sigkill_of_preprocess_redoes_only_the_lost_images(tmp_path, study, reference):
    out = tmp_path / "out"
    process = subprocess.Popen(command(study, out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        wait_for(lambda: len(finished_files(out)) >= 12, process)
        os.killpg(process.pid, signal.SIGKILL)  # the container is killed: preprocess and its workers
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    assert not (out / "_SUCCESS.json").exists() and not (out / "images.csv").exists()
    # what the killed run had finished: journal entries and the inode of each PNG it wrote
    entries = {p.stem: json.loads(p.read_text()) for p in (out / ".partial").glob("*.json")}
    assert 0 < len(entries) < 4 * PATIENTS
    kept = {entry["result"]["row"]["image_id"]: (out / ".partial" / f"{key}.png").stat().st_ino
            for key, entry in entries.items()}

    rerun = subprocess.run(command(study, out), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    counts = json.loads((out / "_SUCCESS.json").read_text())["counts"]
    assert counts["resumed"] == len(entries) and counts["processed"] == 4 * PATIENTS - len(entries)
    for image_id, inode in kept.items():  # the very files of the killed run, renamed, not made again
        assert (out / "images" / f"{image_id}.png").stat().st_ino == inode, image_id
    assert_same_outputs(out, reference)


def test_a_changed_cohort_invalidates_what_an_interrupted_run_left(tmp_path, study):
    out = tmp_path / "out"
    first = preprocess_folder(*study, out, load_profile("ci"), workers=1)
    assert first["resumed"] == 0
    # leave a journal behind as a killed run would, then change a patient's label
    shutil.copytree(out / "images", tmp_path / "keep")
    cohort = tmp_path / "cohort.csv"
    cohort.write_text(study[1].read_text().replace("P00,50,0,,", "P00,50,1,,L"))
    again = preprocess_folder(study[0], cohort, out, load_profile("ci"), workers=1)
    assert again["resumed"] == 0 and again["processed"] == 4 * PATIENTS
    images = pd.read_csv(out / "images.csv").set_index("image_id")
    assert images.loc["P00_L_CC", "label"] == 1 and images.loc["P00_R_CC", "label"] == 0


# -- item 4: every path below the input root is a file to try or a rejected.csv row ----------------------


def odd_tree(tmp_path: Path, mg_dicom) -> Path:
    data = tmp_path / "in"
    mg_dicom(data / "ok" / "a.dcm", PatientID="P1", ImageLaterality="L", ViewPosition="CC")
    mg_dicom(data / "locked" / "b.dcm", PatientID="P1", ImageLaterality="R", ViewPosition="CC")
    mg_dicom(data / "ok" / "unreadable.dcm", PatientID="P1", ImageLaterality="R", ViewPosition="MLO")
    mg_dicom(data / os.fsdecode(b"caf\xe9") / "c.dcm", PatientID="P1", ImageLaterality="L", ViewPosition="MLO")
    mg_dicom(data / "ok" / os.fsdecode(b"na\xefve.dcm"), PatientID="P1", ImageLaterality="L", ViewPosition="MLO")
    (data / "ok" / "dangling.dcm").symlink_to(data / "nowhere.dcm")
    (data / "ok" / "loop.dcm").symlink_to(data / "ok" / "loop.dcm")
    (data / "linked-folder").symlink_to(data / "ok", target_is_directory=True)
    os.mkfifo(data / "ok" / "pipe.dcm")
    (data / "ok" / "unreadable.dcm").chmod(0)
    (data / "locked").chmod(0)
    return data


def as_unprivileged(argv: list[str]) -> list[str]:
    """Root reads anything; drop the capabilities that let it, so permissions mean what they say."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file permissions cannot be tested")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", *argv]


def test_every_skipped_path_gets_an_accurate_untruncated_reason(tmp_path, mg_dicom):
    data = odd_tree(tmp_path, mg_dicom)
    cohort = tmp_path / "cohort.csv"
    cohort.write_text(COHORT_HEADER + "P1,50,0,,\n")
    out = tmp_path / "out"
    argv = [*MAMMO, "preprocess", "--input", str(data), "--cohort", str(cohort),
            "--out", str(out), "--profile", "ci", "--workers", "1"]
    try:
        result = subprocess.run(as_unprivileged(argv), cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        (data / "locked").chmod(0o755)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert pd.read_csv(out / "images.csv")["image_id"].tolist() == ["P1_L_CC"]
    rejected = pd.read_csv(out / "rejected.csv").set_index("file")["reason"].to_dict()
    assert rejected == {
        "ok/dangling.dcm": "dangling symbolic link: its target does not exist",
        "ok/loop.dcm": "symbolic link loop (too many levels of symbolic links)",
        "ok/pipe.dcm": "not a regular file but a named pipe (FIFO)",
        "ok/unreadable.dcm": "permission denied: the file cannot be read",
        "caf\\xe9/c.dcm": "file name is not valid UTF-8 (bytes shown as \\xNN): rename the file to process it",
        "ok/na\\xefve.dcm": "file name is not valid UTF-8 (bytes shown as \\xNN): rename the file to process it",
        "linked-folder": "symbolic link to a folder: not followed (it could loop or leave the input folder); "
                         "copy or bind-mount the folder instead",
        "locked": "folder not readable (permission denied): none of its files were looked at",
    }


def test_long_reasons_are_cut_at_a_word_not_inside_one():
    from common.artifacts import one_line

    text = " ".join(f"word{i:03d}" for i in range(100)) + "\nsecond line"
    short = one_line(text)
    assert short.endswith(" ...") and "\n" not in short
    kept = short[: -len(" ...")].split(" ")
    assert kept == [f"word{i:03d}" for i in range(len(kept))]  # whole words only
    assert 100 < len(short) <= 304
    assert one_line("short reason\nmore") == "short reason"
