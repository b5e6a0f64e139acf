"""A real S3-compatible server for tests: ``moto`` in server mode on 127.0.0.1.

The server runs as its own process (own session), so Ray workers and CLI subprocesses started
by a test can reach it too. ``s3_endpoint`` (session scope) starts it once; ``s3`` (function
scope) points the standard AWS environment variables at it, creates a fresh bucket and yields
an :class:`S3Server`. The environment is restored after each test. Without ``moto[server]`` or
``boto3`` installed, tests that use the fixtures are skipped.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 60.0  # moto imports a lot; the test machines can be busy

# Variables that would redirect or override the test credentials/endpoint.
_CLEARED_ENV = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


@dataclass(frozen=True)
class S3Server:
    """A running moto server and a bucket on it that is empty at the start of the test."""

    endpoint: str
    bucket: str

    def uri(self, prefix: str = "") -> str:
        """``s3://<bucket>/<prefix>`` (just the bucket for an empty prefix)."""
        prefix = prefix.strip("/")
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"

    def env(self) -> dict[str, str]:
        """The environment variables that point AWS clients (pyarrow, boto3) at this server."""
        return aws_env(self.endpoint)


def aws_env(endpoint: str) -> dict[str, str]:
    """Dummy credentials, region ``us-east-1`` and ``AWS_ENDPOINT_URL`` = ``endpoint``."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ready(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/moto-api/", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server's own process group (and nothing else)."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Run ``python -m moto.server`` on a free 127.0.0.1 port; yields its endpoint URL."""
    log = Path(tempfile.mkdtemp(prefix="lt-ray-moto-")) / "moto.log"
    for _attempt in range(3):  # the free port can be taken between probing and binding
        port = _free_port()
        endpoint = f"http://127.0.0.1:{port}"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline and not _ready(endpoint):
            time.sleep(0.2)
        if proc.poll() is None and _ready(endpoint):
            break
        _stop(proc)
    else:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"moto server did not start (log {log}):\n{tail}")
    try:
        yield endpoint
    finally:
        _stop(proc)


def _require_moto() -> None:
    for module in ("moto", "flask", "boto3"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install 'moto[server]' boto3)")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Endpoint URL of a moto S3 server shared by the whole test session."""
    _require_moto()
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """AWS env pointed at the moto server and a new empty bucket; env is restored afterwards."""
    import boto3

    for name in _CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in aws_env(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    bucket = f"lt-ray-test-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    yield S3Server(endpoint=s3_endpoint, bucket=bucket)
