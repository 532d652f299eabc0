"""The local runner runs independent tasks side by side, as Argo does, and keeps each task's accounting its own.

Scheduling is checked on the demo DAG with a stand-in `execute` that only records when each task ran; CPU
attribution and stopping on real child processes (busy loops and sleeps, no pipeline step).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from common import pipeline, runner


def _recording(spans: dict[str, tuple[float, float]], seconds: float = 0.05, fail: str | None = None):
    def execute(task: pipeline.Task, argv: list[str]) -> int:
        began = time.monotonic()
        time.sleep(seconds)
        spans[task.name] = (began, time.monotonic())
        return 1 if task.name == fail else 0

    return execute


def _most_at_once(spans: dict[str, tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in spans.values()] + [(end, -1) for _, end in spans.values()])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def test_tasks_start_only_after_their_inputs_and_two_run_at_once(tmp_path):
    tasks = pipeline.tasks("synthetic", "demo")
    spans: dict[str, tuple[float, float]] = {}
    runner.run_tasks(tasks, tmp_path, echo=lambda line: None, execute=_recording(spans), jobs=2)
    assert set(spans) == {task.name for task in tasks}
    for task in tasks:
        for upstream in task.depends:
            assert spans[upstream][1] <= spans[task.name][0], (upstream, task.name)
    assert _most_at_once(spans) == 2


def test_one_job_runs_the_tasks_one_by_one_in_the_definitions_order(tmp_path):
    tasks = pipeline.tasks("synthetic", "demo")
    spans: dict[str, tuple[float, float]] = {}
    runner.run_tasks(tasks, tmp_path, echo=lambda line: None, execute=_recording(spans, 0.01), jobs=1)
    assert sorted(spans, key=lambda name: spans[name][0]) == [task.name for task in tasks]
    assert _most_at_once(spans) == 1
    assert set(runner.RUNNING.niceness.values()) == {0}  # nothing runs beside a task, so none is in the background
    runner.RUNNING.niceness.clear()


def test_a_failure_starts_nothing_new_and_lets_the_running_task_finish(tmp_path):
    tasks = pipeline.tasks("synthetic", "demo")
    spans: dict[str, tuple[float, float]] = {}
    lines: list[str] = []
    with pytest.raises(runner.TaskFailed, match="synth-film failed"):
        runner.run_tasks(tasks, tmp_path, echo=lines.append, execute=_recording(spans, 0.2, fail="synth-film"),
                         jobs=2)
    # synth-film and synth-ffdm started together; the failure let synth-ffdm finish and started nothing else.
    assert set(spans) == {"synth-film", "synth-ffdm"}
    assert any(line.endswith("synth-ffdm: finished in 0.2s") for line in lines), lines
    assert json.loads((tmp_path / "timings.json").read_text()).keys() == {"synth-film", "synth-ffdm"}


def _child(code: str):
    def execute(task: pipeline.Task, argv: list[str]) -> int:
        return runner.run_child([sys.executable, "-c", code], task.name)

    return execute


BUSY = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass"
IDLE = "import time; time.sleep(1.6)"


def test_each_task_is_charged_only_its_own_cpu_seconds(tmp_path):
    """A busy task finishing while an idle one runs must not land on the idle task's account."""
    tasks = [task for task in pipeline.tasks("synthetic", "demo") if task.name in ("synth-film", "synth-ffdm")]
    codes = {"synth-film": BUSY, "synth-ffdm": IDLE}

    def execute(task: pipeline.Task, argv: list[str]) -> int:
        return _child(codes[task.name])(task, argv)

    runner.run_tasks(tasks, tmp_path, echo=lambda line: None, execute=execute, jobs=2)
    cpu = json.loads((tmp_path / runner.CPU_SECONDS).read_text())
    assert 0.9 <= cpu["synth-film"] <= 1.5, cpu
    assert cpu["synth-ffdm"] < 0.3, cpu


def test_stopping_the_runner_stops_every_running_task(tmp_path):
    tasks = [task for task in pipeline.tasks("synthetic", "demo") if task.name.startswith("synth-")]
    pids: list[int] = []

    def execute(task: pipeline.Task, argv: list[str]) -> int:
        marker = tmp_path / f"{task.name}.pid"
        code = f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(30)"
        return _child(code)(task, argv)

    def stop_when_two_run() -> None:
        deadline = time.monotonic() + 20
        while len(list(tmp_path.glob("*.pid"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        pids.extend(int(p.read_text()) for p in tmp_path.glob("*.pid"))
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_two_run, daemon=True).start()
    began = time.monotonic()
    with pytest.raises(runner.Stopped) as stopped:
        runner.run_tasks(tasks, tmp_path / "work", echo=lambda line: None, execute=execute, jobs=2)
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    assert "during tasks synth-film, synth-ffdm;" in str(stopped.value)
    assert time.monotonic() - began < 15
    assert len(pids) == 2
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert not (tmp_path / "work" / "synth-hospital").exists()  # never started


def test_the_run_records_its_elapsed_time_beside_the_task_times(tmp_path):
    tasks = [task for task in pipeline.tasks("synthetic", "demo") if task.name.startswith("synth-")]
    spans: dict[str, tuple[float, float]] = {}
    runner.run_tasks(tasks, tmp_path, echo=lambda line: None, execute=_recording(spans, 0.3), jobs=2)
    elapsed = json.loads((tmp_path / runner.ELAPSED).read_text())
    assert (elapsed["jobs"], elapsed["tasks"]) == (2, 3)
    assert 0.6 <= elapsed["seconds"] < 0.9  # two rounds of 0.3 s, not three


def test_the_critical_path_runs_first_and_at_full_priority_the_rest_in_the_background(tmp_path):
    """On two cores the film chain (synth, preprocess, pretrain A, A+B, fine-tuning, report) decides the demo's
    wall time; a task started beside one on a longer path to the end is niced, so it takes only idle cycles."""
    tasks = pipeline.tasks("synthetic", "demo")
    spans: dict[str, tuple[float, float]] = {}
    niceness: dict[str, int] = {}
    record = _recording(spans, 0.02)

    def execute(task: pipeline.Task, argv: list[str]) -> int:
        niceness[task.name] = runner.RUNNING.niceness.pop(task.name)
        return record(task, argv)

    lines: list[str] = []
    runner.run_tasks(tasks, tmp_path, echo=lines.append, execute=execute, jobs=2)
    critical = ["synth-film", "preprocess-film", "pretrain-a", "pretrain-ab", "finetune1-stage1", "finetune2-stage1",
                "report"]
    assert {name: niceness[name] for name in critical} == dict.fromkeys(critical, 0)
    assert niceness["synth-ffdm"] == runner.BACKGROUND_NICENESS  # started beside synth-film, whose path is longer
    started = [line.split(": runs")[0].split("] ")[1] for line in lines if ": runs" in line]
    assert started[:2] == ["synth-film", "synth-ffdm"]  # the longest paths first
    paths = runner.path_lengths(tasks)
    assert paths["synth-film"] == max(paths.values())
    assert paths["pretrain-a"] > paths["pretrain-ab"] > paths["finetune2-stage1"] > paths["radiomics"]


def test_a_background_task_really_runs_niced():
    """Each task leads its own session, and with the kernel's autogroups (sched_autogroup_enabled) sessions share
    the CPU equally whatever their processes' nice values: the session's own autogroup must be niced too (without
    it, four busy loops on two cores got 16.1, 16.1, 15.3, 15.9 M iterations; with it 28.0, 28.4, 4.4, 4.4)."""
    code = "import os, sys; sys.exit(os.nice(0))"
    runner.RUNNING.niceness["probe"] = runner.BACKGROUND_NICENESS
    assert runner.run_child([sys.executable, "-c", code], "probe") == os.nice(0) + runner.BACKGROUND_NICENESS
    assert runner.run_child([sys.executable, "-c", code], "probe") == os.nice(0)  # only the start it was set for
    if Path("/proc/self/autogroup").is_file():
        group = "import sys; sys.exit(int(open('/proc/self/autogroup').read().split()[-1]))"
        runner.RUNNING.niceness["probe"] = runner.BACKGROUND_NICENESS
        assert runner.run_child([sys.executable, "-c", group], "probe") == runner.BACKGROUND_NICENESS
