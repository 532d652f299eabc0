"""What the demo costs: core-seconds per task from the runner, and the benchmark's sums per step."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from common import runner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from pipeline_walltime import read_run  # noqa: E402


def test_children_cpu_seconds_count_a_busy_child_and_not_a_sleeping_one():
    before = runner._children_cpu_seconds()
    subprocess.run([sys.executable, "-c", "import time\nend = time.process_time() + 0.6\n"
                    "while time.process_time() < end: pass"], check=True)
    busy = runner._children_cpu_seconds() - before
    before = runner._children_cpu_seconds()
    started = time.time()
    subprocess.run([sys.executable, "-c", "import time; time.sleep(0.6)"], check=True)
    asleep = runner._children_cpu_seconds() - before
    assert busy >= 0.6, busy
    assert asleep < 0.5 < time.time() - started, asleep


def test_breakdown_sums_core_seconds_per_step_and_the_run_s_shared_import(tmp_path):
    walls = {"synth-film": 10.0, "synth-ffdm": 6.0, "pretrain-a": 20.0}
    cores = {"synth-film": 19.0, "synth-ffdm": 11.0, "pretrain-a": 35.0, runner.PRELOADED: 4.0}
    (tmp_path / "timings.json").write_text(json.dumps(walls))
    (tmp_path / runner.CPU_SECONDS).write_text(json.dumps(cores))
    for task, step in (("synth-film", "synth"), ("synth-ffdm", "synth"), ("pretrain-a", "pretrain")):
        (tmp_path / task).mkdir()
        (tmp_path / task / "_SUCCESS.json").write_text(json.dumps({"step": step, "timings": {"total_seconds": 1.0}}))
    breakdown = read_run(tmp_path)
    steps = {row["step"]: row for row in breakdown["steps"]}
    assert steps["synth"]["core_s"] == 30.0 and steps["synth"]["wall_s"] == 16.0
    assert steps["pretrain"]["core_s"] == 35.0
    # The forked tasks' shared import belongs to no step but to the run.
    assert breakdown["total_core_s"] == 69.0 and breakdown["preloaded_core_s"] == 4.0
    assert breakdown["total_wall_s"] == 36.0 and set(steps) == {"synth", "pretrain"}


def test_tasks_side_by_side_the_pipeline_time_is_the_runs_elapsed_time_not_the_sum(tmp_path):
    walls = {"synth-film": 10.0, "synth-ffdm": 6.0}
    (tmp_path / "timings.json").write_text(json.dumps(walls))
    (tmp_path / runner.ELAPSED).write_text(json.dumps({"seconds": 11.0, "jobs": 2, "tasks": 2}))
    breakdown = read_run(tmp_path)
    assert breakdown["total_wall_s"] == 11.0 and breakdown["task_wall_sum_s"] == 16.0 and breakdown["jobs"] == 2
    assert {row["task"]: row["share"] for row in breakdown["tasks"]} == {"synth-film": 10 / 16, "synth-ffdm": 6 / 16}
    # A run that redid only some tasks says nothing about the whole pipeline's elapsed time.
    (tmp_path / runner.ELAPSED).write_text(json.dumps({"seconds": 4.0, "jobs": 2, "tasks": 1}))
    assert read_run(tmp_path)["total_wall_s"] == 16.0
