"""Real services on loopback for the integration tests: an S3 server (moto), a Pushgateway, a fault proxy."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, seconds: float = 30.0) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before serving {url}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {seconds}s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen
    env: dict[str, str]

    def client(self, **credentials: str):
        import boto3

        keys = {"aws_access_key_id": self.env["AWS_ACCESS_KEY_ID"],
                "aws_secret_access_key": self.env["AWS_SECRET_ACCESS_KEY"], **credentials}
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", **keys)


def _start_moto(extra_env: dict[str, str] | None = None) -> tuple[str, subprocess.Popen]:
    port = free_port()
    moto = shutil.which("moto_server", path=str(VENV_BIN)) or shutil.which("moto_server")
    if moto is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    process = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], env={**os.environ, **(extra_env or {})},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    wait_http(f"{endpoint}/moto-api/", process)
    return endpoint, process


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "MAMMO_S3_ATTEMPTS": "3", "MAMMO_S3_BACKOFF_SECONDS": "0.2"}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    endpoint, process = _start_moto()
    try:
        yield S3Server(endpoint, process, {**S3_ENV, "AWS_ENDPOINT_URL": endpoint})
    finally:
        stop(process)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment a step needs to reach the loopback S3 (also applied to this process)."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return dict(s3_server.env)


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    name = f"mammo-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


@dataclass
class Pushgateway:
    url: str

    def metrics_text(self) -> str:
        return urllib.request.urlopen(f"{self.url}/metrics", timeout=5).read().decode()

    def samples(self, name: str, **labels: str) -> list[float]:
        """Values of a metric whose labels include `labels` (parsed with prometheus_client's parser)."""
        from prometheus_client.parser import text_string_to_metric_families

        values = []
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    values.append(sample.value)
        return values


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushgateway]:
    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        pytest.skip("prometheus-pushgateway is not installed (make system-deps installs the Debian package)")
    port = free_port()
    persistence = tmp_path_factory.mktemp("pushgateway") / "metrics.data"
    process = subprocess.Popen([binary, "--web.listen-address", f"127.0.0.1:{port}",
                                f"--persistence.file={persistence}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/-/ready", process)
        yield Pushgateway(url)
    finally:
        stop(process)


@pytest.fixture
def pipeline_id() -> str:
    """A pipeline grouping key unique to the test, so tests sharing the gateway do not see each other."""
    return f"itest-{uuid.uuid4().hex[:8]}"


REQUEST_LINES = (b"PUT ", b"GET ", b"HEAD ", b"POST ", b"DELETE ")


class FaultProxy:
    """A TCP forwarder to the S3 server that goes down for good at the PUT request after `fail_after` of them.

    It stands for an endpoint that dies in the middle of a step: from then on every request is reset and new
    connections are refused. Requests it forwarded before are still answered: resetting them too made how
    many uploads completed depend on the machine's load (uploads run in parallel, and a busy machine had all
    of them still waiting for their answer when the endpoint died, so none was published).
    """

    def __init__(self, target_port: int, fail_after: int):
        self.target_port = target_port
        self.fail_after = fail_after
        self.puts = 0
        self.refused_after_down = 0
        self.down = threading.Event()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(32)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down.is_set():
                self.refused_after_down += 1
                _reset(client)
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_client and data.startswith(REQUEST_LINES) and self._refuses(data):
                    _reset(source)
                    _reset(sink)
                    return
                sink.sendall(data)  # answers, and the bodies of requests forwarded before the endpoint died
        except OSError:
            pass

    def _refuses(self, request: bytes) -> bool:
        """Whether the endpoint is down for a new request (counting it if it is a PUT)."""
        with self._lock:
            if request.startswith(b"PUT "):
                self.puts += 1
                if self.puts > self.fail_after:
                    self.down.set()
            return self.down.is_set()

    def close(self) -> None:
        self.down.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _reset(sock)


def _reset(sock: socket.socket) -> None:
    """Abort a connection: shutdown wakes any thread blocked reading it, linger 0 makes close send a reset."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@pytest.fixture
def fault_proxy(s3_server: S3Server) -> Iterator[type[FaultProxy]]:
    created: list[FaultProxy] = []
    port = int(s3_server.endpoint.rsplit(":", 1)[1])

    def make(fail_after: int) -> FaultProxy:
        proxy = FaultProxy(port, fail_after)
        created.append(proxy)
        return proxy

    yield make
    for proxy in created:
        proxy.close()


@pytest.fixture
def authenticating_s3() -> Iterator[tuple[str, dict[str, str]]]:
    """A separate S3 server that checks credentials; returns its endpoint and one valid key pair."""
    import boto3

    # The first three requests (create user, attach policy, create key) are allowed without credentials.
    endpoint, process = _start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    try:
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="mammo")
        iam.put_user_policy(UserName="mammo", PolicyName="s3", PolicyDocument=(
            '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}'))
        key = iam.create_access_key(UserName="mammo")["AccessKey"]
        yield endpoint, {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    finally:
        stop(process)
