"""Bare-metal recovery when the host's agent is dead: the restore run stays available to its
recovery session for the session's lifetime (its command does not expire, the run is not failed
for silence while the session drives it), a revived agent never gets that command, and the
watchdog's usual rules come back once the session is gone. The clock is moved by editing the
server's database and driving the watchdog tick with `now`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from contract_world import Tenant, backed_up_point, make_tenant, server_db, start_restore
from sqlalchemy import update

from e3backup.server.db.base import utcnow
from e3backup.server.db.engine import session_scope
from e3backup.server.db.models import Command, RecoverySession, Run
from e3backup.server.services import watchdog

WATCHDOG_S, CANCEL_S = 720.0, 900.0


def _recovery(tenant: Tenant, token: str, route: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{tenant.server.url}/api/recovery{route}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _token(tenant: Tenant, run_id: int) -> str:
    answer = tenant.api("POST", f"/runs/{run_id}/recovery_session")
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["session_token"]
    return token


def _status(tenant: Tenant, run_id: int) -> tuple[str, str | None]:
    run = tenant.api("GET", f"/runs/{run_id}").json()
    return run["status"], run.get("error_code")


def test_recovery_session_keeps_the_run_of_a_dead_agent(make_server) -> None:
    server = make_server(watchdog_tick_s="3600")
    acme = make_tenant(server, "acme")
    agent = acme.enroll()
    point_id = backed_up_point(acme, agent)
    rescued = start_restore(acme, point_id)["restore_run_id"]
    token = _token(acme, rescued)
    orphan = start_restore(acme, point_id)["restore_run_id"]  # no session: expires as before
    with server_db(server) as factory, session_scope(factory) as db:  # an hour goes by
        ttl_passed = utcnow() - timedelta(seconds=1)
        db.execute(update(Command).values(expires_at=ttl_passed))
        report = watchdog.tick(db, WATCHDOG_S, CANCEL_S)
    assert report.failed_restores == [orphan]
    assert _status(acme, orphan) == ("failed", None)
    assert _status(acme, rescued) == ("queued", None)
    assert agent.post("poll_commands", {}).json()["commands"] == [], "past its TTL: never sent"

    context = _recovery(acme, token, "/restore_context", {})
    assert context.status_code == 200, context.text
    first = _recovery(acme, token, "/update_run", {"run_id": rescued, "status": "running"})
    assert first.status_code == 200 and first.json()["applied"], first.text

    # the rescue environment goes quiet for longer than the agent watchdog allows
    with server_db(server) as factory, session_scope(factory) as db:
        silent = utcnow() - timedelta(hours=1)
        db.execute(update(Run).where(Run.id == rescued).values(heartbeat_at=silent))
        report = watchdog.tick(db, WATCHDOG_S, CANCEL_S)
    assert report.failed_offline == [] and _status(acme, rescued) == ("running", None)

    # the session ends: the usual rules apply again
    with server_db(server) as factory, session_scope(factory) as db:
        gone = utcnow() - timedelta(seconds=1)
        db.execute(
            update(RecoverySession).where(RecoverySession.run_id == rescued).values(expires_at=gone)
        )
        report = watchdog.tick(db, WATCHDOG_S, CANCEL_S)
    assert report.failed_offline == [rescued]
    assert _status(acme, rescued) == ("failed", "AGENT_OFFLINE")


def test_a_session_following_an_agent_restore_does_not_shield_it(make_server) -> None:
    """A session opened to follow a restore the agent received: the agent's silence still
    fails the run."""
    server = make_server(watchdog_tick_s="3600")
    acme = make_tenant(server, "acme")
    agent = acme.enroll()
    run_id = start_restore(acme, backed_up_point(acme, agent))["restore_run_id"]
    _token(acme, run_id)
    [command] = agent.post("poll_commands", {}).json()["commands"]
    assert agent.post("update_run", {"run_id": run_id, "status": "running"}).is_success
    with server_db(server) as factory, session_scope(factory) as db:
        silent = utcnow() - timedelta(hours=1)
        db.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=silent))
        db.execute(
            update(Command).where(Command.id == command["command_id"]).values(expires_at=silent)
        )
        report = watchdog.tick(db, WATCHDOG_S, CANCEL_S)
    assert report.failed_offline == [run_id]
