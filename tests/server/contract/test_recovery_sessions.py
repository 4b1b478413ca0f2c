"""Seed 003 recovery sessions: a token bound to one restore run, stored hashed, usable only on
/api/recovery/* and only for its run; expiry +6 h, slid only within its last 30 min (the clock
is driven by editing expires_at in the server's database); expired → 401."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from contract_world import (
    ACCESS_KEY,
    REPO_PASSWORD,
    SECRET_KEY,
    Tenant,
    backed_up_point,
    make_tenant,
    make_user,
    server_db,
    start_restore,
)
from sqlalchemy import select, update

from e3backup.server.db.engine import session_scope
from e3backup.server.db.models import RecoverySession

SQLITE_ONLY = pytest.mark.parametrize("make_server", ["sqlite"], indirect=True)


def _recovery(
    tenant: Tenant, token: str, method: str, route: str, body: Any = None
) -> httpx.Response:
    return httpx.request(
        method,
        f"{tenant.server.url}/api/recovery{route}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _session(tenant: Tenant, run_id: int) -> dict[str, Any]:
    answer = tenant.api("POST", f"/runs/{run_id}/recovery_session")
    assert answer.status_code == 200, answer.text
    doc: dict[str, Any] = answer.json()
    return doc


def _expiry(doc: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(doc["session_expires_at"])


@SQLITE_ONLY
def test_token_opens_only_its_own_restore_run(make_server) -> None:
    server = make_server()
    acme, beta = make_tenant(server, "acme"), make_tenant(server, "beta")
    agent = acme.enroll()
    point_id = backed_up_point(acme, agent)
    run_a = start_restore(acme, point_id)["restore_run_id"]
    run_b = start_restore(acme, point_id)["restore_run_id"]
    doc = _session(acme, run_a)
    token = doc["session_token"]
    assert doc["run_id"] == run_a
    assert _expiry(doc) - datetime.now(UTC) > timedelta(hours=5, minutes=59)

    status = _recovery(acme, token, "GET", f"/runs/{run_a}")
    assert status.status_code == 200 and status.json()["run"]["run_type"] == "restore"
    assert _recovery(acme, token, "GET", f"/runs/{run_b}").status_code == 404
    assert _recovery(acme, token, "POST", "/cancel", {"run_id": run_b}).status_code == 404
    assert _recovery(acme, token, "GET", f"/runs/{run_a}/events").json() == []

    # The recovery environment reports on its run and can cancel it.
    update_body = {"run_id": run_a, "status": "running", "progress_pct": 0}
    assert _recovery(acme, token, "POST", "/update_run", update_body).json()["applied"]
    event = {"event_id": "r1", "message_id": "HYPERV_RESTORE_STARTING", "params": {}}
    pushed = _recovery(acme, token, "POST", "/push_events", {"run_id": run_a, "events": [event]})
    assert pushed.json() == {"accepted": 1, "duplicates": 0}
    assert [e["event_id"] for e in acme.api("GET", f"/runs/{run_a}/events").json()] == ["r1"]
    assert not _recovery(acme, token, "GET", f"/runs/{run_a}/poll_cancel").json()[
        "cancel_requested"
    ]
    cancelled = _recovery(acme, token, "POST", "/cancel", {"run_id": run_a})
    assert cancelled.status_code == 200 and cancelled.json()["cancel_requested"]
    assert _recovery(acme, token, "GET", f"/runs/{run_a}/poll_cancel").json()["cancel_requested"]
    assert acme.api("GET", f"/runs/{run_b}").json()["cancel_requested"] is False

    # Nothing else opens with it; other credentials do not open the recovery endpoints.
    bearer = {"Authorization": f"Bearer {token}"}
    for path in ("/api/v1/me", f"/api/v1/runs/{run_a}", "/api/v1/agents"):
        assert httpx.get(f"{server.url}{path}", headers=bearer).status_code == 401, path
    assert httpx.post(f"{server.url}/api/agent/next_run", headers=bearer).status_code == 401
    for other in (acme.api_token, beta.api_token, "e3r_guessed"):
        assert _recovery(acme, other, "GET", f"/runs/{run_a}").status_code == 401
    assert httpx.get(f"{server.url}/api/recovery/runs/{run_a}").status_code == 401

    with server_db(server) as sessions, session_scope(sessions) as db:
        stored = db.scalars(select(RecoverySession.token_hash)).all()
    assert stored == [hashlib.sha256(token.encode()).hexdigest()], "stored hashed, once"


@SQLITE_ONLY
def test_who_may_open_a_session(make_server) -> None:
    server = make_server()
    acme, beta = make_tenant(server, "acme"), make_tenant(server, "beta")
    viewer = make_user(server, "acme", acme.tenant_id, "viewer")
    agent = acme.enroll()
    point_id = backed_up_point(acme, agent)
    backup_run = acme.api("GET", "/runs", params={"run_type": "backup"}).json()["items"][0]
    assert acme.api("POST", f"/runs/{backup_run['id']}/recovery_session").status_code == 422
    run_id = start_restore(acme, point_id)["restore_run_id"]
    assert beta.api("POST", f"/runs/{run_id}/recovery_session").status_code == 404
    assert viewer.api("POST", f"/runs/{run_id}/recovery_session").status_code == 403
    assert acme.api("POST", f"/runs/{run_id}/cancel").json()["status"] == "cancelled"
    assert acme.api("POST", f"/runs/{run_id}/recovery_session").status_code == 409


def _set_expiry(server, at: datetime) -> None:
    with server_db(server) as sessions, session_scope(sessions) as db:
        db.execute(update(RecoverySession).values(expires_at=at))


def _stored_expiry(server) -> datetime:
    with server_db(server) as sessions, session_scope(sessions) as db:
        return db.scalars(select(RecoverySession.expires_at)).one()


@pytest.mark.parametrize("make_server", ["sqlite", "postgresql"], indirect=True)
def test_expiry_slides_only_within_the_last_30_minutes(make_server) -> None:
    server = make_server()
    acme = make_tenant(server, "acme")
    agent = acme.enroll()
    run_id = start_restore(acme, backed_up_point(acme, agent))["restore_run_id"]
    token = _session(acme, run_id)["session_token"]
    refresh = {"run_id": run_id}

    far = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    _set_expiry(server, far)
    answer = _recovery(acme, token, "POST", "/refresh_session", refresh)
    assert answer.status_code == 200 and _expiry(answer.json()) == far, "not refreshed yet"
    assert _recovery(acme, token, "GET", f"/runs/{run_id}").json()["session_expires_at"]
    assert _stored_expiry(server) == far, "2 h left: activity leaves the expiry alone"

    _set_expiry(server, datetime.now(UTC) + timedelta(minutes=20))
    answer = _recovery(acme, token, "POST", "/refresh_session", refresh)
    slid = _expiry(answer.json())
    assert slid - datetime.now(UTC) > timedelta(hours=5, minutes=59), "slid to now + 6 h"
    assert _stored_expiry(server) == slid

    # Any activity endpoint slides it too (seed: status, events, poll_cancel...).
    _set_expiry(server, datetime.now(UTC) + timedelta(minutes=5))
    assert _recovery(acme, token, "GET", f"/runs/{run_id}/events").status_code == 200
    assert _stored_expiry(server) - datetime.now(UTC) > timedelta(hours=5, minutes=59)

    _set_expiry(server, datetime.now(UTC) - timedelta(seconds=1))
    for method, route, body in (
        ("POST", "/refresh_session", refresh),
        ("GET", f"/runs/{run_id}", None),
        ("GET", f"/runs/{run_id}/poll_cancel", None),
    ):
        expired = _recovery(acme, token, method, route, body)
        assert expired.status_code == 401, (route, expired.text)
        assert "expired" in expired.json()["detail"]


@SQLITE_ONLY
def test_bare_metal_recovery_gets_the_repository_and_takes_the_run_over(make_server) -> None:
    """restore_context gives the point and the job's repository with its secrets (to the
    session only); the first update takes the run over from its agent, whose waiting command is
    withdrawn; a run whose command the agent already received is refused."""
    server = make_server()
    acme = make_tenant(server, "acme")
    agent = acme.enroll()
    point_id = backed_up_point(acme, agent)
    run_a = start_restore(acme, point_id)["restore_run_id"]
    token = _session(acme, run_a)["session_token"]

    context = _recovery(acme, token, "POST", "/restore_context", {})
    assert context.status_code == 200, context.text
    doc = context.json()
    assert (doc["run_id"], doc["backup_point_id"], doc["status"]) == (run_a, point_id, "queued")
    assert doc["snapshot_id"].startswith("snap-")
    job = doc["job"]
    assert (job["repository_password"], job["dest_bucket"]) == (REPO_PASSWORD, "backups")
    assert (job["dest_access_key"], job["dest_secret_key"]) == (ACCESS_KEY, SECRET_KEY)
    other = _recovery(acme, token, "POST", "/restore_context", {"run_id": run_a + 1000})
    assert other.status_code == 404
    assert _recovery(acme, "e3r_guessed", "POST", "/restore_context", {}).status_code == 401

    taken = _recovery(acme, token, "POST", "/update_run", {"run_id": run_a, "status": "running"})
    assert taken.status_code == 200 and taken.json()["applied"], taken.text
    assert agent.post("poll_commands", {}).json()["commands"] == [], "withdrawn from the agent"
    assert acme.api("GET", f"/runs/{run_a}").json()["status"] == "running"

    run_b = start_restore(acme, point_id)["restore_run_id"]
    token_b = _session(acme, run_b)["session_token"]
    delivered = agent.post("poll_commands", {}).json()["commands"]
    assert [c["run_id"] for c in delivered] == [run_b]
    refused = _recovery(acme, token_b, "POST", "/update_run", {"run_id": run_b, "progress_pct": 1})
    assert refused.status_code == 409 and "being restored by agent" in refused.json()["detail"]

    assert acme.api("POST", f"/runs/{run_a}/cancel").status_code == 200
    done = {"run_id": run_a, "status": "cancelled"}
    assert _recovery(acme, token, "POST", "/update_run", done).json()["status"] == "cancelled"
    ended = _recovery(acme, token, "POST", "/restore_context", {})
    assert ended.status_code == 409 and "already ended as cancelled" in ended.json()["detail"]
