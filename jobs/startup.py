"""Process start-up of a step: TensorFlow's notices kept off stderr, and SIGTERM taking the workers along.

TensorFlow 2.21 writes "All log messages before absl::InitializeLog() ..." and INFO lines (oneDNN) to
file descriptor 2 while it is imported, whatever TF_CPP_MIN_LOG_LEVEL says. The import is run with
fd 2 captured; everything captured is written back except those two kinds of notice.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

NOTICE = re.compile(rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
                    rb"|I\d{4} \d\d:\d\d:\d+\.\d+ )")


@contextmanager
def quiet_native_notices() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().splitlines(keepends=True) if not NOTICE.match(line)]
            if kept:
                os.write(2, b"".join(kept))


def stop_group_on_sigterm() -> None:
    """A step leading its own process group (the runner starts every task so) passes SIGTERM to the group.

    That includes the parent-death SIGTERM of a runner killed outright: without this the step would die
    alone and leave its pool workers running as orphans. A step started from a shell shares the shell's
    group and keeps the default.
    """
    if os.getpgrp() != os.getpid():
        return

    def stop(signum: int, _frame) -> None:
        signal.signal(signum, signal.SIG_DFL)
        os.killpg(os.getpgrp(), signum)

    signal.signal(signal.SIGTERM, stop)
