"""s3:// staging against a real S3 endpoint on loopback (moto server): round trip, publish order, faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.artifacts import SUCCESS, step_output
from common.storage import RetryPolicy, S3Uri, Storage, StorageError

DRIVER = Path(__file__).parent / "helpers" / "run_step.py"


def run_fake(argv: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DRIVER), "fake", *argv], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


def keys(client, bucket: str, prefix: str = "") -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def finished_folder(path: Path, files: dict[str, bytes]) -> Path:
    with step_output("upstream", path, {}):
        for name, data in files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(data)
    return path


def test_step_stages_s3_input_and_publishes_its_output(s3_server, s3_env, bucket, tmp_path):
    upstream = finished_folder(tmp_path / "up", {"a.txt": b"alpha", "b.txt": b"beta", "sub/c.bin": b"\x00\x01"})
    storage = Storage()
    storage.publish_dir(upstream, S3Uri(bucket, "run/up"))

    result = run_fake(["--input", f"s3://{bucket}/run/up", "--out", f"s3://{bucket}/run/down", "--files", "4"],
                      s3_env)
    assert result.returncode == 0, result.stderr
    client = s3_server.client()
    published = keys(client, bucket, "run/down/")
    assert published == {"run/down/a.txt", "run/down/b.txt", "run/down/_SUCCESS.json",
                         *(f"run/down/images/img{i:03d}.bin" for i in range(4))}
    # The step saw its input's bytes through the staging, and its marker names the local stand-in folder.
    assert client.get_object(Bucket=bucket, Key="run/down/a.txt")["Body"].read() == b"alpha"
    marker = json.loads(client.get_object(Bucket=bucket, Key="run/down/_SUCCESS.json")["Body"].read())
    assert marker["counts"] == {"images": 4, "rejected": 2}
    assert "published 7 files" in result.stderr


def test_marker_is_uploaded_last_and_stale_objects_go(s3_server, s3_env, bucket, tmp_path):
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="out/old-only.txt", Body=b"from an earlier run")
    client.put_object(Bucket=bucket, Key="out/_SUCCESS.json", Body=b"{}")
    folder = finished_folder(tmp_path / "new", {f"f{i}.txt": str(i).encode() for i in range(5)})

    storage = Storage()
    order: list[str] = []
    original = storage.upload_file

    def recording_upload(path, uri):
        order.append(uri.key)
        original(path, uri)

    storage.upload_file = recording_upload
    storage.publish_dir(folder, S3Uri(bucket, "out"))
    assert order[-1] == "out/_SUCCESS.json"
    assert sorted(order[:-1]) == [f"out/f{i}.txt" for i in range(5)]
    assert keys(client, bucket, "out/") == {"out/_SUCCESS.json", *(f"out/f{i}.txt" for i in range(5))}


def test_failed_step_publishes_nothing(s3_server, s3_env, bucket, tmp_path):
    storage = Storage()
    storage.publish_dir(finished_folder(tmp_path / "up", {"a.txt": b"a"}), S3Uri(bucket, "up"))
    result = run_fake(["--input", f"s3://{bucket}/up", "--out", f"s3://{bucket}/down", "--fail"], s3_env)
    assert result.returncode == 2
    assert "mammo fake: fake step told to fail" in result.stderr
    assert keys(s3_server.client(), bucket, "down/") == set()


def test_unfinished_upstream_is_refused(s3_server, s3_env, bucket):
    s3_server.client().put_object(Bucket=bucket, Key="half/a.txt", Body=b"a")  # no _SUCCESS.json
    result = run_fake(["--input", f"s3://{bucket}/half", "--out", f"s3://{bucket}/down"], s3_env)
    assert result.returncode == 2
    assert "has no _SUCCESS.json" in result.stderr


def test_endpoint_down_mid_step_retries_then_fails_clearly(s3_server, s3_env, bucket, tmp_path, fault_proxy):
    storage = Storage()
    storage.publish_dir(finished_folder(tmp_path / "up", {"a.txt": b"a"}), S3Uri(bucket, "up"))
    # The output write check PUTs one object; publishing deletes the old marker (DELETE), then PUTs 12 images
    # + a.txt; the endpoint dies after 6 PUTs, i.e. 5 uploads.
    proxy = fault_proxy(fail_after=6)
    env = {**s3_env, "AWS_ENDPOINT_URL": proxy.endpoint, "MAMMO_S3_ATTEMPTS": "3", "MAMMO_S3_BACKOFF_SECONDS": "0.1"}
    started = time.time()
    result = run_fake(["--input", f"s3://{bucket}/up", "--out", f"s3://{bucket}/down", "--files", "12",
                       "--size", "2000"], env)
    elapsed = time.time() - started

    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]  # the refusal is the last line: no timing after a failure
    assert last.startswith("mammo fake: S3 endpoint http://127.0.0.1:") and "unreachable after 3 attempts" in last
    assert "Traceback" not in result.stderr
    assert "(attempt 1/3)" in result.stderr and "(attempt 2/3)" in result.stderr
    assert proxy.down.is_set() and proxy.refused_after_down >= 2  # the retries really went to the network
    assert elapsed < 30
    published = keys(s3_server.client(), bucket, "down/")
    assert f"down/{SUCCESS}" not in published
    assert 0 < len(published) <= 5  # some files made it before the endpoint died, the marker never did


def test_wrong_credentials_fail_at_once_with_a_clear_message(authenticating_s3, tmp_path):
    endpoint, good = authenticating_s3
    good_storage_env = {**good, "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=good["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=good["AWS_SECRET_ACCESS_KEY"])
    client.create_bucket(Bucket="mammo-auth")
    client.put_object(Bucket="mammo-auth", Key="up/_SUCCESS.json", Body=b"{}")

    for wrong in ({"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, {"AWS_ACCESS_KEY_ID": "AKIANOSUCHKEY0000000"}):
        env = {**good_storage_env, **wrong, "MAMMO_S3_ATTEMPTS": "5", "MAMMO_S3_BACKOFF_SECONDS": "2"}
        started = time.time()
        result = run_fake(["--input", "s3://mammo-auth/up", "--out", "s3://mammo-auth/down"], env)
        assert result.returncode == 2
        assert "rejected the credentials" in result.stderr and "AWS_SECRET_ACCESS_KEY" in result.stderr
        assert "retrying" not in result.stderr and time.time() - started < 15  # not retried
        assert "Traceback" not in result.stderr

    # The right credentials work against the same server, so the failures above were the credentials.
    result = run_fake(["--input", "s3://mammo-auth/up", "--out", "s3://mammo-auth/down"], good_storage_env)
    assert result.returncode == 0, result.stderr


def test_missing_bucket_and_missing_prefix_are_one_line_errors(s3_server, s3_env, bucket, tmp_path):
    storage = Storage()
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        storage.download(S3Uri("no-such-bucket-here", "x/"), tmp_path / "x")
    with pytest.raises(StorageError, match="is empty or does not exist"):
        storage.download(S3Uri(bucket, "nothing/here"), tmp_path / "y")


def test_single_object_inputs_are_downloaded_as_files(s3_server, s3_env, bucket, tmp_path):
    s3_server.client().put_object(Bucket=bucket, Key="data/cohort.csv", Body=b"patient_id\nP1\n")
    path = Storage().download(S3Uri.parse(f"s3://{bucket}/data/cohort.csv"), tmp_path / "in")
    assert path == tmp_path / "in" / "cohort.csv" and path.read_bytes() == b"patient_id\nP1\n"


def test_unreachable_endpoint_without_server(tmp_path):
    storage = Storage("http://127.0.0.1:9", RetryPolicy(attempts=2, backoff_seconds=0.05))
    with pytest.raises(StorageError, match=r"unreachable after 2 attempts \(list s3://b/k\)"):
        storage.list_keys(S3Uri("b", "k"))


def test_uri_parsing():
    uri = S3Uri.parse("s3://bucket/a/b/")
    assert (uri.bucket, uri.prefix, str(uri.join("c", "d.txt"))) == ("bucket", "a/b/", "s3://bucket/a/b/c/d.txt")
    assert S3Uri.parse("s3://bucket").prefix == ""
    with pytest.raises(StorageError):
        S3Uri.parse("s3:///key")
