"""S3 (or MinIO) storage for step inputs and outputs, so the same step runs on a laptop and in a cluster.

Steps only ever see local folders: `staged()` downloads `s3://` inputs to a scratch folder before the step
and publishes the output folder after it. Publishing is ordered so a reader can never mistake a partial
upload for a finished step: the destination's old `_SUCCESS.json` is removed first, every other file is
uploaded, objects left over from an earlier run are deleted, and `_SUCCESS.json` goes up last. A step whose
body failed never wrote its local marker, so it publishes nothing. Before anything is downloaded or computed,
an `s3://` output is checked by writing (and deleting) one empty object under it, so a missing bucket or a
read-only prefix stops the step in seconds instead of after hours of compute.

The endpoint comes from `--s3-endpoint` or `AWS_ENDPOINT_URL` (any S3-compatible server); credentials from
boto3's usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, or a pod's role). Transient
faults (endpoint unreachable, timeouts, 5xx, throttling) are retried with exponential backoff; rejected
credentials and missing buckets fail at once, each with one clear line.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from common.artifacts import SUCCESS, UnusableInput

ENDPOINT_ENV = "AWS_ENDPOINT_URL"
ATTEMPTS_ENV = "MAMMO_S3_ATTEMPTS"
BACKOFF_ENV = "MAMMO_S3_BACKOFF_SECONDS"
STAGING_ENV = "MAMMO_STAGING_DIR"
UPLOAD_THREADS = 8

_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "InvalidClientTokenId",
    "403",
}
_TRANSIENT_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling", "503", "500"}

T = TypeVar("T")


class StorageError(UnusableInput):
    """An S3 location that cannot be used: the CLI prints the one-line reason and exits 2."""


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        if not is_s3(uri):
            raise ValueError(f"not an s3:// URI: {uri}")
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not bucket:
            raise StorageError(f"{uri}: no bucket name")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def prefix(self) -> str:
        """The key as a folder prefix (with one trailing slash, empty for the bucket root)."""
        return self.key.rstrip("/") + "/" if self.key.strip("/") else ""

    def join(self, *parts: str) -> S3Uri:
        return S3Uri(self.bucket, self.prefix + "/".join(p.strip("/") for p in parts))


def is_s3(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("s3://")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        return cls(
            attempts=max(1, int(os.environ.get(ATTEMPTS_ENV, cls.attempts))),
            backoff_seconds=float(os.environ.get(BACKOFF_ENV, cls.backoff_seconds)),
        )

    def delay(self, attempt: int) -> float:
        return min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))


class Storage:
    """One S3 endpoint with the retry and error policy every caller in the project shares."""

    def __init__(self, endpoint: str | None = None, retry: RetryPolicy | None = None):
        import boto3
        from botocore.config import Config

        self.endpoint = endpoint or os.environ.get(ENDPOINT_ENV) or None
        self.retry = retry or RetryPolicy.from_env()
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        config = Config(
            # Retries are ours (logged, with a clear final message); botocore's would multiply them.
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            # MinIO and other self-hosted endpoints need path-style addressing.
            s3={"addressing_style": "path" if self.endpoint else "auto"},
        )
        self.client = boto3.client("s3", endpoint_url=self.endpoint, region_name=region, config=config)

    @property
    def where(self) -> str:
        return self.endpoint or "AWS S3"

    def call(self, operation: str, uri: S3Uri, fn: Callable[[], T]) -> T:
        """Run one S3 request; retry transient faults, translate the rest into one-line StorageErrors."""
        from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

        for attempt in range(1, self.retry.attempts + 1):
            try:
                return fn()
            except (NoCredentialsError, PartialCredentialsError) as error:
                raise StorageError(
                    f"no usable S3 credentials for {uri} ({error}): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                ) from error
            except ClientError as error:
                code = str(error.response.get("Error", {}).get("Code", ""))
                if code in _CREDENTIAL_CODES:
                    raise StorageError(
                        f"S3 at {self.where} rejected the credentials for {operation} {uri} ({code}): "
                        "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy"
                    ) from error
                if code == "NoSuchBucket":
                    raise StorageError(f"bucket {uri.bucket!r} does not exist at {self.where}") from error
                if code not in _TRANSIENT_CODES:
                    raise
                reason = f"{code}: {error.response.get('Error', {}).get('Message', '')}"
            except Exception as error:  # connection-level faults come in many classes
                if not _is_connection_fault(error):
                    raise
                reason = f"{type(error).__name__}: {error}"
            if attempt == self.retry.attempts:
                raise StorageError(
                    f"S3 endpoint {self.where} unreachable after {attempt} attempts ({operation} {uri}): {reason}"
                )
            delay = self.retry.delay(attempt)
            print(
                f"storage: {operation} {uri} failed (attempt {attempt}/{self.retry.attempts}): {reason}; "
                f"retrying in {delay:.1f}s",
                file=sys.stderr,
            )
            time.sleep(delay)
        raise AssertionError("unreachable")

    # -- single objects ------------------------------------------------------------------------------

    def exists(self, uri: S3Uri) -> bool:
        from botocore.exceptions import ClientError

        def head() -> bool:
            try:
                self.client.head_object(Bucket=uri.bucket, Key=uri.key)
                return True
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                    return False
                raise

        return self.call("head", uri, head)

    def get_bytes(self, uri: S3Uri) -> bytes:
        return self.call("get", uri, lambda: self.client.get_object(Bucket=uri.bucket, Key=uri.key)["Body"].read())

    def get_with_etag(self, uri: S3Uri) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, or None when it does not exist (for compare-and-swap updates)."""
        from botocore.exceptions import ClientError

        def get() -> tuple[bytes, str] | None:
            try:
                response = self.client.get_object(Bucket=uri.bucket, Key=uri.key)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                    return None
                raise
            return response["Body"].read(), response["ETag"]

        return self.call("get", uri, get)

    def put_bytes(self, uri: S3Uri, data: bytes, if_match: str | None = None, if_none_match: bool = False) -> str:
        """Write one object (S3 replaces an object atomically); optional preconditions make it a CAS."""
        extra: dict[str, str] = {}
        if if_match is not None:
            extra["IfMatch"] = if_match
        if if_none_match:
            extra["IfNoneMatch"] = "*"
        response = self.call(
            "put", uri, lambda: self.client.put_object(Bucket=uri.bucket, Key=uri.key, Body=data, **extra)
        )
        return response["ETag"]

    def delete(self, uri: S3Uri) -> None:
        self.call("delete", uri, lambda: self.client.delete_object(Bucket=uri.bucket, Key=uri.key))

    def upload_file(self, path: Path, uri: S3Uri) -> None:
        def put() -> None:
            with open(path, "rb") as handle:
                self.client.put_object(Bucket=uri.bucket, Key=uri.key, Body=handle)

        self.call("put", uri, put)

    def download_file(self, uri: S3Uri, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")

        def get() -> None:
            body = self.client.get_object(Bucket=uri.bucket, Key=uri.key)["Body"]
            with open(tmp, "wb") as handle:
                for chunk in body.iter_chunks(1 << 20):
                    handle.write(chunk)

        try:
            self.call("get", uri, get)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    # -- folders -------------------------------------------------------------------------------------

    def list_keys(self, uri: S3Uri) -> list[str]:
        """Keys below a folder prefix (folder placeholder objects excluded)."""

        def listing() -> list[str]:
            keys: list[str] = []
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=uri.bucket, Prefix=uri.prefix):
                keys.extend(obj["Key"] for obj in page.get("Contents", []) if not obj["Key"].endswith("/"))
            return keys

        return self.call("list", uri, listing)

    def list_folders(self, uri: S3Uri) -> list[str]:
        """Names of the immediate sub-folders of a prefix."""

        def listing() -> list[str]:
            names: list[str] = []
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=uri.bucket, Prefix=uri.prefix, Delimiter="/"):
                names.extend(p["Prefix"][len(uri.prefix) :].rstrip("/") for p in page.get("CommonPrefixes", []))
            return names

        return self.call("list", uri, listing)

    def download_dir(self, uri: S3Uri, local: Path) -> int:
        keys = self.list_keys(uri)
        if not keys:
            raise StorageError(f"{uri} is empty or does not exist at {self.where}")
        local.mkdir(parents=True, exist_ok=True)
        _parallel(
            lambda key: self.download_file(S3Uri(uri.bucket, key), local / key[len(uri.prefix) :]), keys
        )
        return len(keys)

    def download(self, uri: S3Uri, local: Path) -> Path:
        """Fetch an object or a whole folder prefix; returns the local path that stands for `uri`."""
        if uri.key and not uri.key.endswith("/") and self.exists(uri):
            target = local / Path(uri.key).name
            self.download_file(uri, target)
            return target
        self.download_dir(uri, local)
        return local

    def check_writable(self, uri: S3Uri) -> None:
        """Write and delete one empty object under a folder prefix; one-line StorageError when that fails."""
        probe = uri.join(f".mammo-write-check-{uuid.uuid4().hex}")
        try:
            self.put_bytes(probe, b"")
            self.delete(probe)
        except StorageError as error:
            raise StorageError(f"output {uri} is not writable: {error}") from error

    def publish_dir(self, local: Path, uri: S3Uri) -> int:
        """Upload a finished step folder so readers see either the old marker-less state or the whole new one."""
        marker = local / SUCCESS
        if not marker.is_file():
            raise StorageError(f"{local} has no {SUCCESS}: refusing to publish an unfinished step")
        files = sorted(p for p in local.rglob("*") if p.is_file() and p != marker)
        target_marker = uri.join(SUCCESS)
        self.delete(target_marker)
        new_keys = {uri.prefix + p.relative_to(local).as_posix() for p in files}
        _parallel(lambda p: self.upload_file(p, S3Uri(uri.bucket, uri.prefix + p.relative_to(local).as_posix())), files)
        stale = [k for k in self.list_keys(uri) if k not in new_keys and k != target_marker.key]
        _parallel(lambda key: self.delete(S3Uri(uri.bucket, key)), stale)
        self.upload_file(marker, target_marker)
        return len(files) + 1


def _parallel(fn: Callable[[Any], Any], items: list[Any]) -> None:
    """Run transfers on a few threads; the first failure cancels the rest and is re-raised."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=min(UPLOAD_THREADS, len(items))) as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _is_connection_fault(error: Exception) -> bool:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError
    from botocore.exceptions import ReadTimeoutError as BotoReadTimeout
    from urllib3.exceptions import HTTPError as Urllib3Error

    return isinstance(error, (BotoConnectionError, HTTPClientError, BotoReadTimeout, Urllib3Error, ConnectionError))


def add_arguments(parser: Any) -> None:
    """The storage option every step accepts (the CLI adds it to each subcommand that lacks it)."""
    import argparse

    try:
        parser.add_argument(
            "--s3-endpoint",
            default=None,
            help=f"S3-compatible endpoint URL for s3:// paths (default: ${ENDPOINT_ENV}, else AWS)",
        )
    except argparse.ArgumentError:
        pass  # the step defines it itself


@contextmanager
def staged(args: Any, input_args: tuple[str, ...], output_arg: str | None) -> Iterator[None]:
    """Replace `s3://` arguments by local folders for the step body, then publish its output folder."""
    remote_inputs = [name for name in input_args if is_s3(getattr(args, name, None))]
    remote_output = output_arg if output_arg and is_s3(getattr(args, output_arg, None)) else None
    if not remote_inputs and not remote_output:
        yield
        return
    storage = Storage(getattr(args, "s3_endpoint", None))
    if remote_output:
        storage.check_writable(S3Uri.parse(getattr(args, remote_output)))
    root = Path(tempfile.mkdtemp(prefix="mammo-stage-", dir=os.environ.get(STAGING_ENV)))
    staged_as: dict[str, str] = {}  # local stand-in -> the s3:// URI the user gave
    try:
        for name in remote_inputs:
            uri = S3Uri.parse(getattr(args, name))
            local = storage.download(uri, root / "in" / name)
            staged_as[str(local)] = getattr(args, name)
            setattr(args, name, str(local))
        out_uri = None
        if remote_output:
            out_uri = S3Uri.parse(getattr(args, remote_output))
            local_out = root / "out"
            staged_as[str(local_out)] = getattr(args, remote_output)
            setattr(args, remote_output, str(local_out))
        try:
            yield
        except UnusableInput as error:
            raise _in_user_terms(error, staged_as) from None
        if out_uri is not None and (local_out / SUCCESS).is_file():
            count = storage.publish_dir(local_out, out_uri)
            print(f"storage: published {count} files to {out_uri}", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _in_user_terms(error: UnusableInput, staged_as: dict[str, str]) -> UnusableInput:
    """The same refusal with every staging path replaced by the URI the user gave (the scratch path means
    nothing to them and is gone when the message is read)."""
    message = str(error)
    for local, uri in sorted(staged_as.items(), key=lambda item: -len(item[0])):
        message = message.replace(local, uri.rstrip("/"))
    try:
        return type(error)(message)
    except TypeError:
        return UnusableInput(message)

