"""Metrics that tell the truth about S3 outputs (issue 15, item 6): success is pushed only after the output is
published, and an output location that cannot be written stops the step before any compute. Real moto S3
server, real Pushgateway, the real `mammo` CLI path in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from common.artifacts import step_output
from common.storage import S3Uri, Storage

DRIVER = Path(__file__).parent / "helpers" / "run_step.py"


def run_fake(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DRIVER), "fake", *argv], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def upstream(bucket: str, tmp_path: Path) -> str:
    folder = tmp_path / "up"
    with step_output("upstream", folder, {}):
        (folder / "a.txt").write_text("a")
    Storage().publish_dir(folder, S3Uri(bucket, "up"))
    return f"s3://{bucket}/up"


def test_a_step_failing_at_publish_pushes_failure_and_keeps_last_success(
        s3_server, s3_env, bucket, tmp_path, pushgateway, pipeline_id, fault_proxy):
    source = upstream(bucket, tmp_path)
    env = {**s3_env, "PUSHGATEWAY_URL": pushgateway.url, "PIPELINE_ID": pipeline_id}
    group = {"job": "mammo_fake", "pipeline": pipeline_id}

    ok = run_fake(["--input", source, "--out", f"s3://{bucket}/down", "--files", "2"], env)
    assert ok.returncode == 0, ok.stderr
    assert pushgateway.samples("mammo_step_success", **group) == [1.0]
    assert pushgateway.samples("mammo_step_images_processed", **group) == [2.0]
    [first_success] = pushgateway.samples("mammo_step_last_success_unixtime", **group)

    time.sleep(0.05)
    proxy = fault_proxy(fail_after=6)  # the write check and a few uploads go through, then S3 is gone
    failing = {**env, "AWS_ENDPOINT_URL": proxy.endpoint, "MAMMO_S3_ATTEMPTS": "2", "MAMMO_S3_BACKOFF_SECONDS": "0.1"}
    broken = run_fake(["--input", source, "--out", f"s3://{bucket}/down", "--files", "12", "--size", "2000"],
                      failing)
    assert broken.returncode == 2, broken.stderr
    assert "unreachable after 2 attempts" in broken.stderr and proxy.down.is_set()
    assert pushgateway.samples("mammo_step_success", **group) == [0.0]
    assert pushgateway.samples("mammo_step_last_success_unixtime", **group) == [first_success]
    assert pushgateway.samples("mammo_step_images_processed", **group) == [2.0]  # the last success's count
    [last_run] = pushgateway.samples("mammo_step_last_run_unixtime", **group)
    assert last_run > first_success


def test_an_output_bucket_that_does_not_exist_stops_the_step_before_compute(s3_server, s3_env, bucket, tmp_path):
    source = upstream(bucket, tmp_path)
    started = tmp_path / "started"
    result = run_fake(["--input", source, "--out", "s3://no-such-output-bucket/run/x", "--started", str(started)],
                      s3_env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if not line.endswith("s")]  # minus the timing line
    assert lines == ["mammo fake: output s3://no-such-output-bucket/run/x is not writable: bucket "
                     "'no-such-output-bucket' does not exist at " + s3_env["AWS_ENDPOINT_URL"]], result.stderr
    assert not started.exists()  # the step body never ran


def test_the_write_check_leaves_nothing_behind(s3_server, s3_env, bucket, tmp_path):
    source = upstream(bucket, tmp_path)
    result = run_fake(["--input", source, "--out", f"s3://{bucket}/down", "--files", "1"], s3_env)
    assert result.returncode == 0, result.stderr
    pages = s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="down/")
    assert {o["Key"] for page in pages for o in page.get("Contents", [])} == {
        "down/a.txt", "down/images/img000.bin", "down/_SUCCESS.json"}
