"""What the contract tests set up through the admin CLI and the API, like a person would: a
tenant, an admin with an API token, an enrolled agent, and helpers to call both APIs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from e3backup.server.db.engine import make_engine, make_session_factory
from e3backup.server.settings import SQLITE_FILE_NAME
from fixtures.server_process import LiveServer

PASSWORD = "correct horse battery"
REPO_PASSWORD = "repo-pw-Zq81-never-shown"
ACCESS_KEY = "AKIA-never-shown-7731"
SECRET_KEY = "s3-secret-never-shown-5520"
SECRETS = (REPO_PASSWORD, ACCESS_KEY, SECRET_KEY, PASSWORD)


@dataclass
class Agent:
    server: LiveServer
    agent_id: int
    token: str

    def headers(self) -> dict[str, str]:
        return {"X-Agent-ID": str(self.agent_id), "X-Agent-Token": self.token}

    def post(self, route: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.post(
            f"{self.server.url}/api/agent/{route}", json=body, headers=self.headers(), timeout=30
        )


@dataclass
class Tenant:
    server: LiveServer
    name: str
    tenant_id: int
    api_token: str
    email: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_token}"}

    def api(self, method: str, route: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, f"{self.server.url}/api/v1{route}", headers=self.headers(), timeout=60, **kwargs
        )

    def enroll(self, hostname: str = "host1") -> Agent:
        token = self.server.admin("enrollment-token", "create", "--tenant", self.name)["token"]
        answer = httpx.post(
            f"{self.server.url}/api/agent/enroll",
            json={"enrollment_token": token, "hostname": hostname, "os": "linux"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        doc = answer.json()
        return Agent(self.server, doc["agent_id"], doc["agent_token"])

    def create_job(self, agent: Agent, **fields: Any) -> dict[str, Any]:
        body = {
            "name": "nightly",
            "agent_id": agent.agent_id,
            "engine": "disk_image",
            "disk_source_volume": "/dev/vg0/root",
            "dest_type": "s3",
            "dest_bucket": "backups",
            "dest_prefix": "host1",
            "dest_endpoint": "http://127.0.0.1:9000",
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "repository_password": REPO_PASSWORD,
            **fields,
        }
        answer = self.api("POST", "/jobs", json=body)
        assert answer.status_code == 201, answer.text
        doc: dict[str, Any] = answer.json()
        return doc

    def run_now(self, job_id: int) -> dict[str, Any]:
        answer = self.api("POST", f"/jobs/{job_id}/runs")
        assert answer.status_code == 201, answer.text
        doc: dict[str, Any] = answer.json()
        return doc


def make_tenant(
    server: LiveServer, name: str, role: str = "admin", parent: str | None = None
) -> Tenant:
    extra = ["--parent", parent] if parent else []
    tenant = server.admin("tenant", "create", name, *extra)
    return make_user(server, name, tenant["id"], role)


def make_user(server: LiveServer, name: str, tenant_id: int, role: str) -> Tenant:
    """Another user (with an API token) of an existing tenant."""
    password_file = server.data_dir / f"{name}.pw"
    password_file.write_text(PASSWORD)
    email = f"{role}@{name}.test"
    server.admin(
        "user",
        "create",
        email,
        "--tenant",
        name,
        "--role",
        role,
        "--password-file",
        str(password_file),
    )
    token = server.admin("api-token", "create", email)["token"]
    return Tenant(server, name, tenant_id, token, email)


def backed_up_point(tenant: Tenant, agent: Agent, **job_fields: Any) -> int:
    """A disk_image job backed up once by the agent; the id of its backup point."""
    job = tenant.create_job(agent, **job_fields)
    run_id = tenant.run_now(job["id"])["id"]
    assert agent.post("next_run").json()["run_id"] == run_id
    assert agent.post("update_run", {"run_id": run_id, "status": "running"}).is_success
    done = {"run_id": run_id, "status": "success", "snapshot_id": f"snap-{run_id}"}
    assert agent.post("update_run", done).json()["status"] == "success"
    points = tenant.api("GET", "/backup_points", params={"job_id": job["id"]}).json()["items"]
    point_id: int = points[0]["id"]
    return point_id


def start_restore(tenant: Tenant, point_id: int) -> dict[str, Any]:
    answer = tenant.api(
        "POST", "/restores", json={"backup_point_id": point_id, "target_path": "/restore"}
    )
    assert answer.status_code == 201, answer.text
    doc: dict[str, Any] = answer.json()
    return doc


@contextmanager
def server_db(server: LiveServer) -> Iterator[sessionmaker[Session]]:
    """Sessions on the live server's own database, for a test that must edit a row (a clock
    it cannot wait for) or look at what is stored."""
    engine = make_engine(server.db_url or f"sqlite:///{server.data_dir / SQLITE_FILE_NAME}")
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, "a secret leaked into a client answer"
