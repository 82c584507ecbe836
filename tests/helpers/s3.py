"""A real S3 API on 127.0.0.1 for the tests: moto's server, as a team's MinIO would be.

`python -m moto.server` speaks the S3 protocol over HTTP and keeps buckets in memory, so DVC
(through dvc-s3, i.e. s3fs/aiobotocore) and MLflow's server (through boto3) talk to it exactly as
they talk to MinIO or AWS S3 with an endpoint URL; only the endpoint differs. It accepts any
access key. The server dies with the process that started it (PR_SET_PDEATHSIG), so a killed
pytest leaves no server behind; fixtures stop it themselves otherwise.

Every environment built here disables the EC2 instance-metadata lookup that botocore falls back
to when it finds no credentials: that lookup goes to a link-local address off this machine.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

# Credentials moto accepts (it accepts any); what a teammate would have in their environment.
# Made per test session: they open nothing but this local fake server, and no key-shaped
# value sits in the repository (tests/test_secrets.py refuses committed ones).
ACCESS_KEY = f"litpipe-test-{secrets.token_hex(4)}"
SECRET_KEY = secrets.token_hex(20)
REGION = "us-east-1"

# The AWS variables a process may read; removed from every environment built here first, so
# a developer's own AWS setup never leaks into (or out to) a test.
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
            "MLFLOW_S3_ENDPOINT_URL", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def empty_aws_config() -> str:
    """An empty file for AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE (botocore refuses a
    named config file that is not a regular file, /dev/null included)."""
    path = Path(tempfile.gettempdir()) / "litpipe-tests-empty-aws-config"
    if not path.is_file() or path.stat().st_size:
        path.write_text("")
    return str(path)


def without_aws(env: dict[str, str]) -> dict[str, str]:
    """``env`` with no AWS credentials or config reachable: the "no S3 access" environment."""
    clean = {k: v for k, v in env.items() if k not in AWS_VARS}
    clean["AWS_CONFIG_FILE"] = clean["AWS_SHARED_CREDENTIALS_FILE"] = empty_aws_config()
    clean["AWS_EC2_METADATA_DISABLED"] = "true"
    return clean


def with_aws(env: dict[str, str]) -> dict[str, str]:
    """``env`` holding the test credentials, as `export AWS_ACCESS_KEY_ID=…` would."""
    return {**without_aws(env), "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION}


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class MotoS3:
    """`python -m moto.server -H 127.0.0.1 -p PORT`, started now, stopped by :meth:`stop`."""

    def __init__(self, log_dir: Path, timeout: float = 30) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / "moto.log"
        with open(self.log, "w") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=without_aws(dict(os.environ)), preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited {self._proc.returncode}:\n"
                                   f"{self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.endpoint} in {timeout:.0f} s")

    def client(self) -> Any:
        """A boto3 S3 client for this server (the test's own view of the bucket)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in ``bucket`` under ``prefix``, sorted."""
        pages = self.client().get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
