"""One writer per folder, replacements whole or not at all, and a stopped runner stops its task.

Real processes throughout: the lock is the kernel's flock, the runner is `mammo pipeline run`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import MAMMO

from common import workfolder
from common.artifacts import SUCCESS, step_output

ROOT = Path(__file__).resolve().parents[1]
MAMMO = list(MAMMO)


def _cohort(path: Path) -> Path:
    rows = [f"p{i:02d},{40 + i},{i % 2},pair{i // 2},{'L' if i % 2 else ''}" for i in range(20)]
    path.write_text("patient_id,age,label,pair_id,cancer_laterality\n" + "\n".join(rows) + "\n")
    return path


def _split(cohort: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = [*MAMMO, "split", "--cohort", str(cohort), "--out", str(out), "--profile", "ci", *extra]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_a_step_run_by_hand_replaces_a_folder_of_another_run_whole(tmp_path):
    cohort, out = _cohort(tmp_path / "cohort.csv"), tmp_path / "split"
    assert _split(cohort, out).returncode == 0
    first = json.loads((out / SUCCESS).read_text())["fingerprint"]
    (out / "only-in-the-first-run.txt").write_text("left by run 1")
    assert _split(cohort, out).returncode == 0  # same fingerprint: in place, as before
    assert (out / "only-in-the-first-run.txt").is_file()
    result = _split(cohort, out, "--seed", "7")
    assert result.returncode == 0, result.stderr
    marker = json.loads((out / SUCCESS).read_text())
    assert marker["fingerprint"]["parts"]["args"]["--seed"] == ["7"] and marker["fingerprint"] != first
    assert sorted(p.name for p in out.iterdir()) == [SUCCESS, "split.csv"]  # nothing of run 1 is left
    assert sorted(p.name for p in tmp_path.iterdir()) == [".split.lock", "cohort.csv", "split"]


def test_a_failed_replacement_leaves_the_old_run_whole_and_is_resumed(tmp_path):
    out = tmp_path / "step"
    old = {"digest": "old", "parts": {}}
    with workfolder.step_folder(out, old) as target, step_output("demo", target, {}):
        (target / "result.txt").write_text("old")
    new = {"digest": "new", "parts": {}}
    with pytest.raises(RuntimeError), workfolder.step_folder(out, new) as target:
        assert target != out
        with step_output("demo", target, {}):
            (target / "partial.txt").write_text("half of the new run")
            raise RuntimeError("killed")
    assert sorted(p.name for p in out.iterdir()) == [SUCCESS, "result.txt"]
    assert json.loads((out / SUCCESS).read_text())["fingerprint"]["digest"] == "old"
    with workfolder.step_folder(out, new) as target:
        assert (target / "partial.txt").is_file()  # the same run, continued where it stopped
        with step_output("demo", target, {}):
            (target / "result.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [SUCCESS, "partial.txt", "result.txt"]
    assert (out / "result.txt").read_text() == "new"
    assert not (tmp_path / ".step.next").exists() and not (tmp_path / ".step.old").exists()


def test_a_step_refuses_an_output_folder_another_process_writes(tmp_path):
    cohort, out = _cohort(tmp_path / "cohort.csv"), tmp_path / "split"
    with workfolder.locked(out, "output folder"):
        started = time.monotonic()
        result = _split(cohort, out)
    assert result.returncode == 2 and time.monotonic() - started < 60
    assert result.stderr.splitlines() == [
        f"mammo split: output folder {out} is in use by pid {os.getpid()} "
        f"({workfolder._command()}, since {json.loads(workfolder.lock_path(out).read_text())['since']}); "
        "wait for it to finish or stop it"
    ]
    assert not out.exists()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_second_run_refuses_at_once_and_sigterm_stops_the_runner_and_its_task(tmp_path):
    workdir = tmp_path / "work"
    command = [*MAMMO, "pipeline", "run", "--profile", "ci", "--workdir", str(workdir)]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: workfolder.holder_pid(workdir) == first.pid, 60, "the runner's lock")
        task = _wait_for(lambda: (pid := workfolder.holder_pid(workdir / "synth-film")) and _alive(pid) and pid,
                         120, "the first task")
        started = time.monotonic()
        second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
        refused_after = time.monotonic() - started
        assert second.returncode == 2, second.stderr
        lines = second.stderr.splitlines()
        assert len(lines) == 1 and f"is in use by pid {first.pid} (mammo pipeline run" in lines[0], lines
        assert refused_after < 30  # process start-up only: it does not wait for the lock
        assert _alive(task) and first.poll() is None  # the first run carries on untouched

        first.send_signal(signal.SIGTERM)
        code = first.wait(timeout=60)
        assert code == 128 + signal.SIGTERM
        # Two tasks run at once (synth-film and whichever synth task is running beside it): the line names both.
        assert re.search(r"stopped by SIGTERM during tasks synth-film, synth-(ffdm|hospital);", first.stderr.read())
        assert not _alive(task) and _session_members(task) == []  # the task and its pool workers are gone

        again = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(lambda: workfolder.holder_pid(workdir) == again.pid, 60, "the second runner's lock")
        task = _wait_for(lambda: (pid := workfolder.holder_pid(workdir / "synth-film")) != task and pid
                         and _alive(pid) and pid, 120, "the resumed task")
        again.kill()  # SIGKILL: nothing to forward, the kernel's parent-death signal stops the task
        again.wait(timeout=30)
        _wait_for(lambda: not _alive(task) and _session_members(task) == [], 30, "the task and its workers to stop")
    finally:
        for runner in (first, locals().get("again")):
            if runner is not None and runner.poll() is None:
                runner.kill()
