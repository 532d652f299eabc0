"""TensorFlow's start-up notices, kept off stderr so a step's refusal stays one line.

TensorFlow 2.21 writes "All log messages before absl::InitializeLog() ..." and INFO lines (oneDNN) to
file descriptor 2 while it is imported, whatever TF_CPP_MIN_LOG_LEVEL says. The import is run with
fd 2 captured; everything captured is written back except those two kinds of notice.
"""

from __future__ import annotations

import os
import re
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
