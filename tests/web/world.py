"""What the browser tests set up on their live server, like a person would: an MSP tenant with
a child tenant, one user per role (admin CLI), and helpers for the client and agent APIs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from fixtures.server_process import LiveServer

PASSWORD = "correct horse battery"
MSP = "msp"
CHILD = "client-a"
ROLES = ("admin", "operator", "viewer")


@dataclass
class AgentApi:
    server: LiveServer
    agent_id: int
    token: str

    def post(self, route: str, body: dict[str, Any] | None = None) -> httpx.Response:
        headers = {"X-Agent-ID": str(self.agent_id), "X-Agent-Token": self.token}
        return httpx.post(
            f"{self.server.url}/api/agent/{route}", json=body, headers=headers, timeout=30
        )


@dataclass
class WebWorld:
    """The module's server; `email(role)` signs in with `PASSWORD`."""

    server: LiveServer
    api_token: str  # the MSP admin's, for setting data up through the client API
    child_tenant_id: int
    emails: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def password(self) -> str:
        return PASSWORD

    def email(self, role: str) -> str:
        return self.emails[role]

    def api(self, method: str, route: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.api_token}"}
        return httpx.request(
            method, f"{self.url}/api/v1{route}", headers=headers, timeout=60, **kwargs
        )

    def new_tenant(self, name: str) -> int:
        """A child tenant of the MSP (the admin sees it in the tenant switcher); its id."""
        tenant_id: int = self.server.admin("tenant", "create", name, "--parent", MSP)["id"]
        return tenant_id

    def enroll(self, token: str, hostname: str) -> AgentApi:
        answer = httpx.post(
            f"{self.url}/api/agent/enroll",
            json={"enrollment_token": token, "hostname": hostname, "os": "linux"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        doc = answer.json()
        return AgentApi(self.server, doc["agent_id"], doc["agent_token"])

    def enroll_new(self, hostname: str, tenant_id: int | None = None) -> AgentApi:
        """An agent enrolled with a token from the client API (default: the MSP tenant)."""
        answer = self.api("POST", "/enrollment_tokens", json={"tenant_id": tenant_id})
        assert answer.status_code == 201, answer.text
        return self.enroll(answer.json()["token"], hostname)

    def finished_run(
        self, agent: AgentApi, job_name: str, status: str, **result: Any
    ) -> dict[str, Any]:
        """A disk_image job on `agent` into a local repository, run once to `status`."""
        body = {
            "name": job_name,
            "agent_id": agent.agent_id,
            "engine": "disk_image",
            "disk_source_volume": "/dev/vg0/root",
            "dest_type": "local",
            "dest_local_path": f"/srv/repos/{job_name}",
            "repository_password": "repo-password-never-shown",
            "schedule_json": {"type": "daily", "time": "03:00"},
        }
        job = self.api("POST", "/jobs", json=body)
        assert job.status_code == 201, job.text
        run = self.api("POST", f"/jobs/{job.json()['id']}/runs")
        assert run.status_code == 201, run.text
        run_id = run.json()["id"]
        assert agent.post("next_run").json()["run_id"] == run_id
        assert agent.post("update_run", {"run_id": run_id, "status": "running"}).is_success
        done = {"run_id": run_id, "status": status, "snapshot_id": f"snap-{run_id}", **result}
        assert agent.post("update_run", done).json()["status"] == status
        doc: dict[str, Any] = job.json()
        return doc


def build_world(server: LiveServer) -> WebWorld:
    """Through the admin CLI; the independent calls run side by side (each is a process)."""
    server.admin("tenant", "create", MSP)
    password_file = server.data_dir / "users.pw"
    password_file.write_text(PASSWORD)
    emails = {role: f"{role}@{MSP}.test" for role in ROLES}
    calls = [("tenant", "create", CHILD, "--parent", MSP)] + [
        ("user", "create", emails[role], "--tenant", MSP, "--role", role,
         "--password-file", str(password_file))
        for role in ROLES
    ]  # fmt: skip
    with ThreadPoolExecutor(len(calls)) as pool:
        child, *_users = pool.map(lambda args: server.admin(*args), calls)
    token = server.admin("api-token", "create", emails["admin"])["token"]
    return WebWorld(server, token, child["id"], emails)
