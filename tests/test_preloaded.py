"""Tasks forked from the preloaded interpreter: the same results, exit codes, process groups and niceness as a
fresh `mammo` process, with the imports paid once (common.preloaded)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import ROOT, mammo, write_cohort, write_profile

from common import pipeline, preloaded, runner

pytestmark = pytest.mark.slow


def test_preloading_imports_tensorflow_but_runs_no_op():
    """A context made while preloading would fix every forked task's thread counts before it could set them."""
    probe = ("import sys; from common.preloaded import preload; preload(); "
             "from tensorflow.python.eager import context; "
             "sys.exit(10 if context.context()._initialized else 0 if 'keras' in sys.modules else 11)")
    assert subprocess.run([sys.executable, "-c", probe], cwd=ROOT).returncode == 0


def _weights(path: Path) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, item: found.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return found


def test_a_forked_pretraining_equals_one_in_a_fresh_process(tmp_path):
    images_dir, split_dir = write_cohort(tmp_path, n_patients=12, seed=5)
    profile = write_profile(tmp_path / "ci.yaml", pretrain={"epochs": 2})
    common = ["--images", str(images_dir), "--split", str(split_dir), "--profile", str(profile),
              "--source-name", "film"]
    mammo("pretrain", *common, "--out", str(tmp_path / "fresh"))
    with preloaded.Interpreter() as interpreter:
        code = runner.run_forked(["pretrain", *common, "--out", str(tmp_path / "forked")], "pretrain-a", interpreter)
    assert code == 0
    fresh, forked = _weights(tmp_path / "fresh" / "best.weights.h5"), _weights(tmp_path / "forked" / "best.weights.h5")
    assert fresh.keys() == forked.keys() and len(fresh) > 10
    for name, values in fresh.items():
        np.testing.assert_array_equal(forked[name], values, err_msg=name)
    records = [json.loads((tmp_path / run / "training.json").read_text()) for run in ("fresh", "forked")]
    assert records[0]["runtime"] == records[1]["runtime"]
    assert records[1]["runtime"]["intra_op_threads"] == 2  # the task's own setting, not a preloaded default


def test_a_forked_task_leads_its_own_group_niced_with_the_step_exit_code(tmp_path):
    with preloaded.Interpreter() as interpreter:
        task = interpreter.start(["split", "--cohort", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "out")],
                                 {**os.environ, "MAMMO_TASK": "split-x"}, runner.BACKGROUND_NICENESS)
        group, niceness = os.getpgid(task.pid), os.getpriority(os.PRIO_PROCESS, task.pid)
        while (outcome := task.poll()) is None:
            time.sleep(0.05)
        task.close()
        usage = interpreter.start(["split", "--no-such-option"], dict(os.environ), 0)
        while (usage_outcome := usage.poll()) is None:
            time.sleep(0.05)
        usage.close()
        imports = interpreter.cpu_seconds
    assert imports > 2.0 and usage_outcome[1] < 0.5  # TensorFlow and the steps once; a forked task starts at once
    assert group == task.pid != os.getpgrp()
    assert niceness == os.getpriority(os.PRIO_PROCESS, 0) + runner.BACKGROUND_NICENESS
    assert outcome[0] == 2 and usage_outcome[0] == 2  # unusable input and a usage error: exit 2 as from a process
    assert not (tmp_path / "out" / "_SUCCESS.json").exists()


def test_the_runner_charges_the_import_once_and_each_forked_task_its_own_work(tmp_path):
    """cpu_seconds.json adds up to what the kernel charged the runner's children (an independent count): the
    server's import once, each forked task its own work."""
    tasks = [task for task in pipeline.tasks("synthetic", "ci") if task.name.startswith("synth-")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    runner.run_tasks(tasks, tmp_path, echo=lambda line: None, jobs=2)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    kernel = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    cpu = json.loads((tmp_path / runner.CPU_SECONDS).read_text())
    assert set(cpu) == {runner.PRELOADED, "synth-film", "synth-ffdm", "synth-hospital"}
    assert sum(cpu.values()) == pytest.approx(kernel, rel=0.1, abs=0.5)
    assert cpu[runner.PRELOADED] > 2.0  # TensorFlow, Keras and the steps: seconds of CPU, paid once
    assert all((tmp_path / task.name / "_SUCCESS.json").is_file() for task in tasks)


def test_a_killed_server_takes_its_running_task_along_and_the_next_task_gets_a_new_one(tmp_path):
    """The out-of-memory killer may pick the server: the task it was running ends too (parent-death signal) and
    is reported as lost, not waited for; the next task starts from a fresh server."""
    long_synth = ["synth", "--domain", "film", "--patients", "400", "--seed", "1", "--out", str(tmp_path / "synth"),
                  "--profile", "ci"]
    with preloaded.Interpreter() as interpreter:
        task = interpreter.start(long_synth, dict(os.environ), 0)
        first_import = interpreter.cpu_seconds
        server = interpreter._server
        assert server is not None
        server.kill()
        deadline = time.monotonic() + 20
        while (outcome := task.poll()) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert outcome == (preloaded.LOST, 0.0)
        while _alive(task.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(task.pid), "the orphaned task got SIGTERM and ended"
        again = interpreter.start(["split", "--no-such-option"], dict(os.environ), 0)
        while (next_outcome := again.poll()) is None:
            time.sleep(0.05)
        assert next_outcome[0] == 2 and interpreter._server is not server
        assert interpreter.cpu_seconds > first_import  # both servers' imports are counted
    assert not (tmp_path / "synth" / "_SUCCESS.json").exists()


def _alive(pid: int) -> bool:
    """Running, not ended (an ended orphan may stay a zombie until whoever adopted it reaps it)."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" not in status.read_text().lower()
    except FileNotFoundError:
        return False
