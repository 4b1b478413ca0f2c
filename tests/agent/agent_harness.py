"""A real deployment for agent tests: a live `e3backup server` (SQLite), its admin CLI, the
client API with a bearer token, and real `e3backup agent` processes (enroll, run), each stopped
by its own PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from fixtures.server_process import LiveServer, running_server, stop

E3BACKUP = Path(sys.executable).with_name("e3backup")
REPO_PASSWORD = "repo-secret-pw"
FAST_SERVER = {"agent_poll_interval_s": "0.5"}  # E3BACKUP_SERVER_* settings
T = TypeVar("T")
TERMINAL = ("success", "warning", "partial_success", "failed", "cancelled")


def wait_for(check: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Poll `check` until it returns something truthy (no sleeps as synchronisation)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def e3backup(
    *args: str | Path, timeout_s: float = 120, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(E3BACKUP), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"e3backup {' '.join(map(str, args))} exited "
            f"{proc.returncode}: {proc.stderr}{proc.stdout}"
        )
    return proc


@dataclass
class Deployment:
    server: LiveServer
    data_dir: Path
    tmp: Path
    api: httpx.Client
    tenant: str = "acme"

    def admin(self, *args: str | Path) -> dict[str, Any]:
        out = e3backup("admin", *args, "--data-dir", self.data_dir, "--json")
        doc: dict[str, Any] = json.loads(out.stdout)
        return doc

    def enrollment_token(self) -> str:
        return str(self.admin("enrollment-token", "create", "--tenant", self.tenant)["token"])

    def enroll(self, name: str = "agent") -> Path:
        config = self.tmp / name / "agent.toml"
        e3backup(
            "agent",
            "enroll",
            "--server",
            self.server.url,
            "--token",
            self.enrollment_token(),
            "--config",
            config,
        )
        return config

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.api.post(path, json=body or {})
        assert response.status_code < 300, f"{path}: {response.status_code} {response.text}"
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        response = self.api.get(path, params=params)
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
        return response.json()

    def create_job(self, agent_id: int, **fields: Any) -> dict[str, Any]:
        body = {
            "name": f"job-{time.monotonic_ns()}",
            "agent_id": agent_id,
            "repository_password": REPO_PASSWORD,
            **fields,
        }
        job: dict[str, Any] = self.post("/api/v1/jobs", body)
        return job

    def run_now(self, job_id: int) -> int:
        return int(self.post(f"/api/v1/jobs/{job_id}/runs")["id"])

    def run(self, run_id: int) -> dict[str, Any]:
        doc: dict[str, Any] = self.get(f"/api/v1/runs/{run_id}")
        return doc

    def wait_status(
        self, run_id: int, statuses: tuple[str, ...] = TERMINAL, timeout_s: float = 120
    ) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            run = self.run(run_id)
            return run if run["status"] in statuses else None

        return wait_for(done, timeout_s, f"run {run_id} to reach {statuses}")

    def events(self, run_id: int) -> list[dict[str, Any]]:
        doc: list[dict[str, Any]] = self.get(f"/api/v1/runs/{run_id}/events", limit=1000)
        return doc

    def message_ids(self, run_id: int) -> list[str]:
        return [e["message_id"] for e in self.events(run_id)]

    def points(self, job_id: int) -> list[dict[str, Any]]:
        doc: list[dict[str, Any]] = self.get("/api/v1/backup_points", job_id=job_id)["items"]
        return doc

    def wait_command(self, command_id: int) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            command: dict[str, Any] = self.get(f"/api/v1/commands/{command_id}")
            return command if command["status"] in ("completed", "failed") else None

        return wait_for(done, 120, f"command {command_id}")


def configure_qemu(config_path: Path, vm: Any) -> None:
    """Point the agent's QEMU provider at the test VM's QMP and guest-agent sockets."""
    from e3backup.agent.config import load_config, save_config

    config = load_config(config_path)
    config.qemu.qmp_glob = str(vm.qmp_path)
    config.qemu.qga_name = vm.qga_path.name
    config.qemu.scratch_dir = str(vm.dir / "scratch")
    save_config(config)


def agent_id_of(config: Path) -> int:
    import tomllib

    return int(tomllib.loads(config.read_text())["agent_id"])


@contextmanager
def deployment(tmp: Path, settings: dict[str, str] | None = None) -> Iterator[Deployment]:
    data_dir = tmp / "server"
    data_dir.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{data_dir / 'e3backup-server.db'}"
    with running_server(data_dir, db_url, {**FAST_SERVER, **(settings or {})}) as server:
        dep = Deployment(server, data_dir, tmp, httpx.Client(base_url=server.url, timeout=30))
        dep.admin("tenant", "create", dep.tenant)
        password = tmp / "user-password"
        password.write_text("user-password-1\n")
        dep.admin(
            "user",
            "create",
            "ops@example.com",
            "--tenant",
            dep.tenant,
            "--role",
            "admin",
            "--password-file",
            password,
        )
        token = dep.admin("api-token", "create", "ops@example.com")["token"]
        dep.api.headers["Authorization"] = f"Bearer {token}"
        try:
            yield dep
        finally:
            dep.api.close()


class AgentProcess:
    """`e3backup agent run --config C` in the background, its output in a log file."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log_path = config.with_name("agent.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(E3BACKUP), "agent", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            stop(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_agent(config: Path) -> Iterator[AgentProcess]:
    agent = AgentProcess(config).start()
    try:
        yield agent
    finally:
        agent.stop()
