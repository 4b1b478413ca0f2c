"""Malformed, oversized and hostile requests get a 4xx with a message, never a 500."""

from __future__ import annotations

import httpx
from contract_world import make_tenant

HUGE = "9" * 30


def test_bad_requests_are_4xx_with_a_message(make_server) -> None:
    server = make_server(max_body_bytes="65536")
    acme = make_tenant(server, "acme")
    agent = acme.enroll()
    auth = acme.headers()
    cases = [
        (
            "POST",
            "/api/v1/jobs",
            {"content": b"{not json", "headers": {**auth, "content-type": "application/json"}},
        ),
        ("POST", "/api/v1/jobs", {"json": {"name": "x", "engine": "zfs"}, "headers": auth}),
        ("POST", "/api/v1/jobs", {"content": b"x" * 70_000, "headers": auth}),
        ("GET", f"/api/v1/jobs/{HUGE}", {"headers": auth}),
        ("GET", "/api/v1/jobs/abc", {"headers": auth}),
        ("GET", f"/api/v1/runs?job_id={HUGE}", {"headers": auth}),
        ("GET", "/api/v1/runs?limit=100000", {"headers": auth}),
        ("GET", f"/api/v1/runs/{HUGE}/events?after_event_id={HUGE}", {"headers": auth}),
        ("POST", "/api/agent/update_run", {"json": {"run_id": HUGE}, "headers": agent.headers()}),
        (
            "POST",
            "/api/agent/update_run",
            {"json": {"run_id": 1, "progress_pct": 300}, "headers": agent.headers()},
        ),
        (
            "POST",
            "/api/agent/push_events",
            {"json": {"run_id": 1, "events": "x"}, "headers": agent.headers()},
        ),
        ("POST", "/api/agent/next_run", {"headers": {"X-Agent-ID": HUGE, "X-Agent-Token": "x"}}),
        ("POST", "/api/v1/auth/login", {"json": {"email": "a", "password": "b", "x": 1}}),
        ("GET", "/api/v1/jobs", {"headers": {"Authorization": "Basic abc"}}),
        # found by schemathesis: 500s from the database instead of a 4xx
        ("GET", f"/api/v1/jobs/{2**31}", {"headers": auth}),  # PostgreSQL INTEGER ids
        ("GET", f"/api/v1/jobs?offset={HUGE}", {"headers": auth}),  # SQLite integer overflow
        ("GET", "/api/v1/runs?status=%00", {"headers": auth}),  # NUL: PostgreSQL text
        ("POST", "/api/v1/auth/login", {"json": {"email": "a\x00", "password": "b"}}),
        (
            "POST",
            "/api/agent/push_logs",
            {"json": {"run_id": 1, "lines": [{"message": "a\x00"}]}, "headers": agent.headers()},
        ),
    ]
    for method, path, kwargs in cases:
        answer = httpx.request(method, f"{server.url}{path}", timeout=30, **kwargs)
        assert 400 <= answer.status_code < 500, (method, path, answer.status_code, answer.text)
        assert answer.json()["detail"], (method, path)


def _hook(url: str) -> dict[str, object]:
    return {"notify": {"webhook_url": url, "webhook_secret": "hook-secret-0123456789"}}


def test_job_validation_messages(make_server) -> None:
    server = make_server()
    acme = make_tenant(server, "acme")
    agent = acme.enroll()
    base = {
        "name": "j",
        "agent_id": agent.agent_id,
        "engine": "files",
        "source_path": "/etc",
        "dest_type": "local",
        "dest_local_path": "/r",
        "repository_password": "correct horse battery staple",
    }
    cases = [
        ({"repository_password": None}, "a job needs repository_password"),
        ({"engine": "zfs"}, "engine"),
        ({"agent_id": 999_999}, "agent 999999 not found"),
        ({"dest_local_path": ""}, "dest_local_path"),
        ({"dest_type": "s3"}, "dest_bucket"),
        ({"schedule_json": {"type": "cron", "cron": "61 * * * *"}}, "cron"),
        ({"schedule_json": {"type": "weekly", "time": "03:00"}}, "weekday"),
        ({"timezone": "Mars/Olympus"}, "time zone"),
        ({"engine": "kvm"}, "VM"),
        ({"surprise": 1}, "unknown field"),
        # webhook SSRF: internal targets are refused by default, naming the rule and setting
        (_hook("http://169.254.169.254/latest/meta-data/"), "link-local (cloud metadata"),
        (_hook("http://localhost:8420/api"), "localhost resolves to 127.0.0.1, a loopback"),
        (_hook("https://[fd00::1]/x"), "notify_allow_private_targets"),
    ]
    for change, message in cases:
        answer = acme.api("POST", "/jobs", json={**base, **change})
        assert answer.status_code == 422, (change, answer.text)
        assert message in answer.json()["detail"], (change, answer.json())
    assert acme.api("GET", "/jobs").json()["total"] == 0, "nothing was stored"
