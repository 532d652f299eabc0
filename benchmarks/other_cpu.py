"""How much CPU other processes used while a measurement ran: the test of an idle machine.

The load average cannot tell: it counts runnable processes over the last minute, the benchmark's own children
included, so a benchmark that has just finished one measurement reads as load ~1 during the next. Here the
machine's busy CPU time over the measurement (/proc/stat: user, nice, system, irq, softirq, steal jiffies of all
CPUs) minus what this process and its waited-for children used (getrusage RUSAGE_SELF + RUSAGE_CHILDREN, pool
workers included) is what everything else took; as a share of the CPU time the machine had (wall x cores).
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system (idle iowait) irq softirq steal; guest is inside user
QUIET_SHARE = 0.05  # other processes below 5% of the machine: idle enough for a scaling figure


def busy_seconds(stat: Path = Path("/proc/stat")) -> float:
    """CPU seconds every process of the machine has used since boot (all cores)."""
    fields = stat.read_text().splitlines()[0].split()[1:]
    return sum(int(fields[i]) for i in BUSY_FIELDS) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    """CPU seconds of this process and its finished, waited-for children (and theirs)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


@contextmanager
def measured() -> Iterator[dict[str, Any]]:
    """Fills the yielded dict when the block ends: wall, busy, own and other CPU seconds, other's share."""
    record: dict[str, Any] = {}
    wall, busy, own = time.monotonic(), busy_seconds(), own_seconds()
    yield record
    wall, busy, own = time.monotonic() - wall, busy_seconds() - busy, own_seconds() - own
    other = max(0.0, busy - own)  # jiffy rounding can make it a tick below zero
    record.update(wall_s=wall, busy_cpu_s=busy, own_cpu_s=own, other_cpu_s=other,
                  other_cpu_share=other / max(1e-9, wall * (os.cpu_count() or 1)))


def idle(measurements: list[dict[str, Any]]) -> bool | None:
    """Every measurement ran with other processes under QUIET_SHARE of the machine; None if one was not recorded."""
    shares = [m.get("other_cpu_share") for m in measurements]
    if any(share is None for share in shares):
        return None
    return max(shares) < QUIET_SHARE
