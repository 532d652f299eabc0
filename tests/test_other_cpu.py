"""The growth benchmark's idle test (benchmarks/other_cpu.py): other processes' CPU, not the load average, which
counts the benchmark's own children."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import other_cpu  # noqa: E402

BURN = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass\nprint(time.process_time())"


def test_busy_seconds_count_the_busy_fields_of_all_cpus_only(tmp_path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 20 30 5000 70 4 6 8 50 0\ncpu0 50 10 15 2500 35 2 3 4 25 0\n")
    assert other_cpu.busy_seconds(stat) == pytest.approx((100 + 20 + 30 + 4 + 6 + 8) / os.sysconf("SC_CLK_TCK"))


def test_the_benchmarks_own_children_are_not_other_processes():
    """A child burning a CPU-second is this process's own time, whatever the load average says afterwards."""
    with other_cpu.measured() as cpu:
        burned = float(subprocess.run([sys.executable, "-c", BURN], capture_output=True, text=True,
                                      check=True).stdout)
    assert cpu["own_cpu_s"] >= burned >= 1.0  # the child's own clock: counted as ours
    assert cpu["other_cpu_s"] == pytest.approx(max(0.0, cpu["busy_cpu_s"] - cpu["own_cpu_s"]))
    assert cpu["busy_cpu_s"] >= burned - 0.05  # the machine saw the child's work (to a jiffy or so)
    assert cpu["other_cpu_share"] == pytest.approx(cpu["other_cpu_s"] / (cpu["wall_s"] * os.cpu_count()))


def test_idle_means_other_processes_under_five_percent_in_every_measurement():
    # The lead's run at 15:24: load average 1.07-1.41 from the benchmark's own children, others nearly silent.
    quiet = [{"load_before": 1.36, "other_cpu_share": 0.012}, {"load_before": 1.07, "other_cpu_share": 0.03}]
    assert other_cpu.idle(quiet) is True
    assert other_cpu.idle([*quiet, {"load_before": 0.1, "other_cpu_share": 0.08}]) is False
    assert other_cpu.idle([*quiet, {"load_before": 0.1}]) is None  # not recorded: unknown, not idle
