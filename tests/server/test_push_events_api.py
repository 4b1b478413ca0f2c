"""push_events through the real app: a batch is stored, a retried batch is a no-op (found by
the load bench: the ORM bulk insert gave no rowcount and every push answered 500)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from e3backup.server.app import create_app
from e3backup.server.db.engine import session_scope
from e3backup.server.db.models import Agent
from e3backup.server.services.tokens import hash_token
from e3backup.server.settings import ServerSettings
from fixtures.server_db import make_job, make_run, make_tenant_agent

TOKEN = "e3a_test_push_events"


def test_push_events_stores_once(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path, background_enabled=False)
    with TestClient(create_app(settings)) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        with session_scope(ctx.sessions) as db:
            _, agent = make_tenant_agent(db)
            agent.token_hash = hash_token(TOKEN)
            run = make_run(db, make_job(db, agent), status="running")
            headers = {"X-Agent-ID": str(agent.id), "X-Agent-Token": TOKEN}
            run_id = run.id
        events = [
            {"event_id": f"e{i}", "level": "info", "message_id": "HYPERV_VM_STARTING",
             "params": {"vm_name": f"vm{i}"}}
            for i in range(3)
        ]  # fmt: skip
        body = {"run_id": run_id, "events": events}
        first = client.post("/api/agent/push_events", json=body, headers=headers)
        again = client.post("/api/agent/push_events", json=body, headers=headers)
        assert first.status_code == 200, first.text
        assert first.json() == {"accepted": 3, "duplicates": 0}
        assert again.json() == {"accepted": 0, "duplicates": 3}


def test_poll_records_last_seen_outside_the_request(tmp_path: Path) -> None:
    """last_seen is written by its own short transaction, and is stored all the same."""
    settings = ServerSettings(data_dir=tmp_path, background_enabled=False)
    with TestClient(create_app(settings)) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        with session_scope(ctx.sessions) as db:
            _, agent = make_tenant_agent(db, last_seen_at=None)
            agent.token_hash = hash_token(TOKEN)
            agent_id = agent.id
        headers = {"X-Agent-ID": str(agent_id), "X-Agent-Token": TOKEN}
        answer = client.post("/api/agent/poll_commands", json={}, headers=headers)
        assert answer.json() == {"commands": [], "cancel_requested": False}
        assert client.post("/api/agent/next_run", json={}, headers=headers).status_code == 204
        with session_scope(ctx.sessions) as db:
            stored = db.get(Agent, agent_id)
            assert stored is not None and stored.last_seen_at is not None
            assert stored.last_ip == "testclient"
        wrong = {"X-Agent-ID": str(agent_id), "X-Agent-Token": "wrong"}
        assert client.post("/api/agent/next_run", json={}, headers=wrong).status_code == 401
