"""A throwaway S3 API server on 127.0.0.1 (moto in server mode) for the demo (``--s3``), tests and benchmarks.

Why a real server and not a mocked client: s3fs/botocore then speak real HTTP -- multipart uploads,
``If-None-Match`` conditional PUTs, listings, range reads -- exactly as against AWS or MinIO, from every process
(Dagster run workers, torchrun ranks), which only see the standard ``AWS_*`` environment (:meth:`S3Server.env`).

    with start_s3_server(bucket="rdtf") as s3, s3.environment(RDTF_LAKE_ROOT=s3.url("lake")):
        ...                                  # every process started here uses s3://rdtf/lake

The server runs in its own process group with a parent-death signal, so a killed test leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

_PR_SET_PDEATHSIG = 1
ACCESS_KEY, SECRET_KEY, REGION = "rdtf-test", "rdtf-test-secret", "us-east-1"  # moto accepts any credentials


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setpgrp()


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    bucket: str  # created at start
    pid: int

    def env(self) -> dict[str, str]:
        """The environment that points botocore (s3fs, boto3, mlflow) at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION}

    @contextlib.contextmanager
    def environment(self, **extra: str) -> Iterator[None]:
        """Point this process (and its children) at the server: :meth:`env` plus ``extra``, restored on exit."""
        wanted = self.env() | extra
        saved = {k: os.environ.get(k) for k in wanted}
        os.environ.update(wanted)
        try:
            yield
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)

    def url(self, *parts: str) -> str:
        """``s3://<bucket>/<parts...>``."""
        return "/".join([f"s3://{self.bucket}", *parts])


def _wait_up(port: int, proc: subprocess.Popen, timeout_s: float, log: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log, errors="replace") as fh:
                raise RuntimeError(f"moto server exited with {proc.returncode}: {fh.read()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"moto server did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")


@contextlib.contextmanager
def start_s3_server(bucket: str = "rdtf", *, port: int | None = None, timeout_s: float = 60) -> Iterator[S3Server]:
    """Start ``moto`` in server mode on 127.0.0.1, create ``bucket``, yield the server; stop it on exit."""
    port = port or _free_port()
    # the request log goes to a file: a pipe nobody drains fills up and then blocks every request
    log = tempfile.NamedTemporaryFile(prefix="rdtf-moto-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    try:
        _wait_up(port, proc, timeout_s, log.name)
        server = S3Server(f"http://127.0.0.1:{port}", bucket, proc.pid)
        import boto3

        boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=ACCESS_KEY,
                     aws_secret_access_key=SECRET_KEY, region_name=REGION).create_bucket(Bucket=bucket)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
        os.unlink(log.name)
