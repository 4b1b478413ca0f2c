"""The hot agent calls (server/api/agent_fast.py answers their common case before FastAPI) on
SQLite and PostgreSQL: the combined poll hands a run out exactly once and delivers cancels and
commands like the old pair of calls; bad input gets the full route's answers; disable and
delete take effect at once despite the agent-auth cache; last_seen is stored within a flush."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
from contract_world import Agent, make_tenant, server_db
from sqlalchemy import select, update

from e3backup.server.db.models import Agent as AgentRow
from e3backup.server.services.agent_gate import LAST_SEEN_FLUSH_S

CALLERS = 20
FLUSH_SLACK_S = 3.0  # one background tick plus a loaded machine


def running_run(tenant, agent: Agent) -> int:
    run_id: int = tenant.run_now(tenant.create_job(agent)["id"])["id"]
    assert agent.post("poll", {"claim": True}).json()["run"]["run_id"] == run_id
    assert agent.post("update_run", {"run_id": run_id, "status": "running"}).is_success
    return run_id


def hot_calls(agent: Agent, run_id: int) -> dict[str, int]:
    """Status code of every hot route (each answered by the fast path when all is well)."""
    event = {"event_id": f"e{time.monotonic_ns()}", "message_id": "BACKUP_PROGRESS_UPDATE"}
    bodies = {
        "poll": {"run_id": run_id, "claim": False},
        "next_run": {},
        "poll_commands": {"run_id": run_id},
        "update_run": {"run_id": run_id, "progress_pct": 5.0},
        "push_events": {"run_id": run_id, "events": [event]},
    }
    return {route: agent.post(route, body).status_code for route, body in bodies.items()}


def test_combined_poll(make_server) -> None:
    server = make_server(auth_failure_limit="50")
    acme = make_tenant(server, "acme")
    agent = acme.enroll()
    job = acme.create_job(agent)
    run = acme.run_now(job["id"])
    idle = {"run": None, "commands": [], "cancel_requested": False}
    assert agent.post("poll", {"claim": False}).json() == idle, "claim false: no run"

    with ThreadPoolExecutor(CALLERS) as pool:
        answers = list(pool.map(lambda _: agent.post("poll").json(), range(CALLERS)))
    claimed = [a["run"] for a in answers if a["run"] is not None]
    assert len(claimed) == 1, "the run must be handed out exactly once"
    assert claimed[0]["run_id"] == run["id"] and claimed[0]["status"] == "starting"
    assert agent.post("poll", None).json() == idle, "an empty body is a plain poll"
    assert agent.post("next_run").status_code == 204

    assert agent.post("update_run", {"run_id": run["id"], "status": "running"}).is_success
    acme.api("POST", f"/runs/{run['id']}/cancel")
    polled = agent.post("poll", {"run_id": run["id"]}).json()
    assert polled["run"] is None and polled["cancel_requested"] is True
    assert (
        polled["commands"] == agent.post("poll_commands", {"run_id": run["id"]}).json()["commands"]
    )
    assert {"type": "cancel", "run_id": run["id"]}.items() <= polled["commands"][0].items()

    command = acme.api("POST", f"/jobs/{job['id']}/maintenance", json={"kind": "quick"}).json()
    delivered = agent.post("poll", {"claim": False}).json()["commands"]
    assert [c["command_id"] for c in delivered if c["command_id"]] == [command["id"]]
    assert delivered[-1]["type"] == "maintenance_quick" and delivered[-1]["job"]["repository"]
    assert not [c for c in agent.post("poll").json()["commands"] if c["command_id"]]

    bad = agent.post("poll", {"claim": False, "bogus": 1})
    assert bad.status_code == 422 and bad.json()["detail"] == "bogus: unknown field"
    assert agent.post("update_run", {"run_id": run["id"], "progress_pct": 101}).status_code == 422
    huge = {"run_id": run["id"], "events": [], "pad": "x" * (5 << 20)}
    assert agent.post("push_events", huge).status_code == 413
    assert Agent(server, agent.agent_id, "e3a_wrong").post("poll").status_code == 401

    with server_db(server) as sessions, sessions.begin() as db:  # as another replica would
        db.execute(update(AgentRow).where(AgentRow.id == agent.agent_id).values(status="disabled"))
    assert agent.post("poll").status_code == 401, "the poll re-checks the agent every time"


def test_disable_delete_and_last_seen(make_server) -> None:
    server = make_server()
    acme = make_tenant(server, "acme")
    kept, disabled, deleted = acme.enroll("h1"), acme.enroll("h2"), acme.enroll("h3")
    runs = {a.agent_id: running_run(acme, a) for a in (kept, disabled, deleted)}
    started = datetime.now(UTC) - timedelta(seconds=1)  # the database clock may round down
    for agent in (kept, disabled, deleted):  # warm the auth cache on every route
        assert set(hot_calls(agent, runs[agent.agent_id]).values()) <= {200, 204}

    deadline = time.monotonic() + LAST_SEEN_FLUSH_S + FLUSH_SLACK_S
    with server_db(server) as sessions:
        while True:
            with sessions() as db:
                seen = db.scalar(select(AgentRow.last_seen_at).where(AgentRow.id == kept.agent_id))
            if seen is not None and seen.replace(tzinfo=UTC) >= started:
                break
            assert time.monotonic() < deadline, f"last_seen not stored within a flush: {seen}"
            time.sleep(0.2)

    assert acme.api("POST", f"/agents/{disabled.agent_id}/disable").is_success
    assert acme.api("DELETE", f"/agents/{deleted.agent_id}").is_success
    for agent in (disabled, deleted):
        codes = hot_calls(agent, runs[agent.agent_id])
        assert set(codes.values()) == {401}, f"agent {agent.agent_id} still accepted: {codes}"
    assert set(hot_calls(kept, runs[kept.agent_id]).values()) <= {200, 204}
    assert httpx.get(f"{server.url}/healthz", timeout=10).is_success
