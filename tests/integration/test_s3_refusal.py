"""A refused s3:// input is named by its URI, not by the local staging folder it was downloaded to."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DRIVER = Path(__file__).parent / "helpers" / "run_step.py"


def test_unfinished_s3_input_is_refused_by_its_uri(s3_server, s3_env, bucket):
    s3_server.client().put_object(Bucket=bucket, Key="half/a.txt", Body=b"a")  # no _SUCCESS.json
    result = subprocess.run([sys.executable, str(DRIVER), "fake", "--input", f"s3://{bucket}/half", "--out",
                             f"s3://{bucket}/down"], env={**os.environ, **s3_env}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    first = result.stderr.splitlines()[0]
    assert first == f"mammo fake: s3://{bucket}/half has no _SUCCESS.json: its step did not finish", result.stderr
    assert "mammo-stage-" not in result.stderr
