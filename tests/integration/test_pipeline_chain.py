"""The pipeline definition's first tasks as separate `mammo` processes, exchanging folders through a real S3
endpoint on loopback and pushing metrics to a real Pushgateway (ci profile) - what each Argo pod does."""

from __future__ import annotations

import io
import os
import subprocess
import time

import pandas as pd
import pytest
from helpers import MAMMO

from common.pipeline import tasks

pytestmark = pytest.mark.slow
CHAIN = ("synth-hospital", "preprocess-hospital", "split-hospital")


def test_synth_preprocess_split_through_s3_and_pushgateway(s3_server, s3_env, bucket, pushgateway, pipeline_id):
    plan = {task.name: task for task in tasks("synthetic", "ci")}
    workdir = f"s3://{bucket}/run-1"
    env = {**os.environ, **s3_env, "PUSHGATEWAY_URL": pushgateway.url, "PIPELINE_ID": pipeline_id}
    started = time.time()
    for name in CHAIN:
        task = plan[name]
        result = subprocess.run([*MAMMO, *task.argv(workdir)], capture_output=True,
                                text=True, env={**env, "MAMMO_TASK": name}, timeout=300)
        assert result.returncode == 0, f"{name}: {result.stderr[-2000:]}"
    ended = time.time()

    client = s3_server.client()

    def keys(prefix: str) -> list[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def csv(key: str) -> pd.DataFrame:
        return pd.read_csv(io.BytesIO(client.get_object(Bucket=bucket, Key=key)["Body"].read()), dtype=str)

    for name in CHAIN:
        assert f"run-1/{name}/_SUCCESS.json" in keys(f"run-1/{name}/"), name
    patients = int(plan["synth-hospital"].argv(workdir)[plan["synth-hospital"].argv(workdir).index("--patients") + 1])
    assert len(csv("run-1/synth-hospital/cohort.csv")) == patients
    assert len([k for k in keys("run-1/synth-hospital/dicom/") if k.endswith(".dcm")]) == 4 * patients
    images = csv("run-1/preprocess-hospital/images.csv")
    pngs = [k for k in keys("run-1/preprocess-hospital/images/") if k.endswith(".png")]
    assert len(images) == len(pngs) == 4 * patients
    split = csv("run-1/split-hospital/split.csv")
    assert len(split) == patients and set(split["split"]) == {"train", "validation", "test"}

    for name in CHAIN:
        group = {"job": f"mammo_{plan[name].step.replace('-', '_')}", "pipeline": pipeline_id, "task": name}
        assert pushgateway.samples("mammo_step_success", **group) == [1.0], name
        [duration] = pushgateway.samples("mammo_step_duration_seconds", **group)
        assert 0 < duration < ended - started
        [last_success] = pushgateway.samples("mammo_step_last_success_unixtime", **group)
        assert started < last_success < ended
    preprocess = {"job": "mammo_preprocess", "pipeline": pipeline_id, "task": "preprocess-hospital"}
    assert pushgateway.samples("mammo_step_images_processed", **preprocess) == [float(len(images))]
    assert pushgateway.samples("mammo_step_images_rejected", **preprocess) == [0.0]
