"""Every route of the API called with another tenant's ids and credentials: 404/403/401 only
(lists answer 200 with nothing of the other tenant's; creating a job on the other tenant's
agent is the documented 422 "agent N not found"). Without credentials: 401 everywhere."""

from __future__ import annotations

import re
from typing import Any

import httpx
from contract_world import Tenant, make_tenant

PUBLIC = {
    ("GET", "/healthz"),
    ("POST", "/api/agent/enroll"),
    ("POST", "/api/v1/auth/login"),
    ("GET", "/api/docs"),
    ("GET", "/api/openapi.json"),
}
DENIED = {401, 403, 404}
# (method, path) → (JSON body, allowed answers); ids of tenant A are filled in from `ids`.
ROUTES: dict[tuple[str, str], tuple[dict[str, Any] | None, set[int]]] = {
    ("GET", "/api/v1/me"): (None, {200}),
    ("POST", "/api/v1/auth/logout"): (None, {200}),
    ("POST", "/api/v1/auth/tenant"): ({"tenant_id": "{tenant_id}"}, DENIED),
    ("POST", "/api/v1/enrollment_tokens"): ({"tenant_id": "{tenant_id}"}, DENIED),
    ("GET", "/api/v1/agents"): (None, {200}),
    ("GET", "/api/v1/agents/{agent_id}"): (None, DENIED),
    ("DELETE", "/api/v1/agents/{agent_id}"): (None, DENIED),
    ("POST", "/api/v1/agents/{agent_id}/disable"): (None, DENIED),
    ("POST", "/api/v1/agents/{agent_id}/refresh_vms"): (None, DENIED),
    ("POST", "/api/v1/agents/{agent_id}/browse"): ({"path": "/", "wait_s": 0}, DENIED),
    ("GET", "/api/v1/commands/{command_id}"): (None, DENIED),
    ("GET", "/api/v1/jobs"): (None, {200}),
    ("POST", "/api/v1/jobs"): ({"job_on_agent": "{agent_id}"}, {422}),
    ("GET", "/api/v1/jobs/{job_id}"): (None, DENIED),
    ("PATCH", "/api/v1/jobs/{job_id}"): ({"name": "stolen"}, DENIED),
    ("DELETE", "/api/v1/jobs/{job_id}"): (None, DENIED),
    ("POST", "/api/v1/jobs/{job_id}/runs"): (None, DENIED),
    ("POST", "/api/v1/jobs/{job_id}/maintenance"): ({"kind": "quick"}, DENIED),
    ("GET", "/api/v1/runs"): (None, {200}),
    ("GET", "/api/v1/runs/{run_id}"): (None, DENIED),
    ("POST", "/api/v1/runs/{run_id}/cancel"): (None, DENIED),
    ("GET", "/api/v1/runs/{run_id}/events"): (None, DENIED),
    ("GET", "/api/v1/runs/{run_id}/logs"): (None, DENIED),
    ("GET", "/api/v1/backup_points"): (None, {200}),
    ("GET", "/api/v1/vms"): (None, {200}),
    ("GET", "/api/v1/vms/{vm_id}/backup_points"): (None, DENIED),
    ("POST", "/api/v1/restores"): ({"backup_point_id": "{point_id}", "target_path": "/x"}, DENIED),
    ("POST", "/api/v1/agents/{agent_id}/test_destination"): (
        {"dest_type": "local", "dest_local_path": "/r", "wait_s": 0},
        DENIED,
    ),
    ("POST", "/api/v1/agents/{agent_id}/nas_mount"): (
        {"bucket": "bkt", "mount_point": "/mnt/x", "access_key": "a", "secret_key": "s"},
        DENIED,
    ),
    ("POST", "/api/v1/agents/{agent_id}/nas_unmount"): ({"mount_id": "{command_id}"}, DENIED),
    ("POST", "/api/v1/runs/{run_id}/recovery_session"): (None, DENIED),
    ("GET", "/api/recovery/runs/{run_id}"): (None, DENIED),
    ("GET", "/api/recovery/runs/{run_id}/events"): (None, DENIED),
    ("GET", "/api/recovery/runs/{run_id}/poll_cancel"): (None, DENIED),
    ("POST", "/api/recovery/cancel"): ({"run_id": "{run_id}"}, DENIED),
    ("POST", "/api/recovery/update_run"): ({"run_id": "{run_id}", "progress_pct": 1}, DENIED),
    ("POST", "/api/recovery/push_events"): (
        {"run_id": "{run_id}", "events": [{"event_id": "x", "message_id": "X"}]},
        DENIED,
    ),
    ("POST", "/api/recovery/refresh_session"): ({"run_id": "{run_id}"}, DENIED),
    ("POST", "/api/recovery/restore_context"): ({"run_id": "{run_id}"}, DENIED),
    ("POST", "/api/agent/next_run"): (None, {204}),
    ("POST", "/api/agent/update_run"): ({"run_id": "{run_id}", "progress_pct": 1}, DENIED),
    ("POST", "/api/agent/push_events"): (
        {"run_id": "{run_id}", "events": [{"event_id": "x", "message_id": "X"}]},
        DENIED,
    ),
    ("POST", "/api/agent/push_logs"): ({"run_id": "{run_id}", "lines": [{"message": "x"}]}, DENIED),
    ("POST", "/api/agent/poll_commands"): ({"run_id": "{run_id}"}, {200}),
    ("POST", "/api/agent/poll"): ({"run_id": "{run_id}"}, {200}),
    ("POST", "/api/agent/complete_command"): ({"command_id": "{command_id}"}, DENIED),
    ("POST", "/api/agent/report_vms"): ({"vms": [], "command_id": "{command_id}"}, DENIED),
    ("POST", "/api/agent/report_volumes"): ({"volumes": []}, {200}),
    ("POST", "/api/agent/report_browse"): ({"command_id": "{command_id}"}, DENIED),
}
FILTERS = ("agent_id", "job_id", "vm_id")


def _fill(value: Any, ids: dict[str, int]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    if isinstance(value, str) and re.fullmatch(r"\{\w+\}", value):
        return ids[value[1:-1]]
    return value


def _tenant_a_world(a: Tenant) -> dict[str, int]:
    agent = a.enroll("a-host")
    agent.post("report_vms", {"vms": [{"vm_guid": "u1", "vm_name": "vm1", "disks": []}]})
    job = a.create_job(agent, engine="kvm", vms=["u1"], disk_source_volume="")
    run = a.run_now(job["id"])
    agent.post("next_run")
    agent.post("update_run", {"run_id": run["id"], "status": "running"})
    result = {"vm_id": "u1", "vm_name": "vm1", "snapshot_id": "s1", "disk_manifests": {"d": 1}}
    agent.post("update_run", {"run_id": run["id"], "status": "success", "vm_results": [result]})
    active = a.run_now(job["id"])
    command = a.api("POST", f"/agents/{agent.agent_id}/refresh_vms").json()
    point = a.api("GET", "/backup_points").json()["items"][0]
    return {
        "tenant_id": a.tenant_id,
        "agent_id": agent.agent_id,
        "job_id": job["id"],
        "run_id": active["id"],
        "command_id": command["id"],
        "point_id": point["id"],
        "vm_id": point["vm_id"],
    }


def _is_tenant_a(item: dict[str, Any], ids: dict[str, int]) -> bool:
    if item.get("tenant_id") == ids["tenant_id"]:
        return True
    return any(item.get(k) == ids[k] for k in ("agent_id", "job_id") if k in item)


def _job_body(template: dict[str, Any], agent_id: int) -> dict[str, Any]:
    if "job_on_agent" not in template:
        return template
    return {
        "name": "x",
        "agent_id": agent_id,
        "engine": "files",
        "source_path": "/etc",
        "dest_type": "local",
        "dest_local_path": "/r",
        "repository_password": "pw",
    }


def test_every_route_refuses_another_tenants_ids(make_server) -> None:
    server = make_server(auth_failure_limit="10000")  # 70 unauthenticated calls follow
    a, b = make_tenant(server, "tenant-a"), make_tenant(server, "tenant-b")
    ids = _tenant_a_world(a)
    b_agent = b.enroll("b-host")
    spec = httpx.get(f"{server.url}/api/openapi.json").json()
    served = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert served - PUBLIC == set(ROUTES), "every route needs an isolation case"

    for (method, template), (body, allowed) in ROUTES.items():
        path = _fill(template, ids) if "{" not in template else template.format(**ids)
        filled = _job_body(_fill(body, ids), ids["agent_id"]) if body is not None else None
        agent_route = path.startswith("/api/agent/")
        headers = b_agent.headers() if agent_route else b.headers()
        params = {k: ids[k] for k in FILTERS} if method == "GET" else None
        answer = httpx.request(
            method, f"{server.url}{path}", json=filled, headers=headers, params=params, timeout=60
        )
        assert answer.status_code in allowed, (method, path, answer.status_code, answer.text)
        if answer.status_code == 200 and "items" in answer.json():
            assert not [i for i in answer.json()["items"] if _is_tenant_a(i, ids)], (method, path)
        if template == "/api/agent/poll_commands":
            assert answer.json() == {"commands": [], "cancel_requested": False}
        if template == "/api/agent/poll":  # tenant A's queued run and command stay A's
            assert answer.json() == {"run": None, "commands": [], "cancel_requested": False}
        no_auth = httpx.request(method, f"{server.url}{path}", json=filled, timeout=60)
        assert no_auth.status_code == 401, (method, path, "without credentials")

    # Tenant A's things are all still there and unchanged.
    assert a.api("GET", f"/jobs/{ids['job_id']}").json()["name"] == "nightly"
    assert a.api("GET", f"/agents/{ids['agent_id']}").json()["status"] == "enabled"
    assert a.api("GET", f"/runs/{ids['run_id']}").json()["status"] == "queued"
