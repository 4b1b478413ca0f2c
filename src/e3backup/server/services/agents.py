"""Agents: listing, disable (token revoked) and delete (seed agent_delete), and the volumes an
agent reports. Header authentication and last-seen: services/agent_gate.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from e3backup.server.db.base import utcnow
from e3backup.server.db.models import Agent, Job, Run
from e3backup.server.db.models.runs import ACTIVE_STATUSES
from e3backup.server.services import audit
from e3backup.server.services.auth import Actor
from e3backup.server.services.errors import NotFound
from e3backup.server.services.run_states import is_terminal
from e3backup.server.services.tokens import new_token


def get_agent(db: Session, actor: Actor, agent_id: int) -> Agent:
    agent = db.get(Agent, agent_id)
    if agent is None or not actor.sees(agent.tenant_id):
        raise NotFound(f"agent {agent_id} not found")
    return agent


def list_agents(db: Session, actor: Actor, limit: int, offset: int) -> tuple[list[Agent], int]:
    where = [Agent.tenant_id.in_(actor.tenant_ids)]
    total = db.scalar(select(func.count()).select_from(Agent).where(*where)) or 0
    rows = db.scalars(select(Agent).where(*where).order_by(Agent.id).limit(limit).offset(offset))
    return list(rows), total


def is_online(agent: Agent, window_s: float) -> bool:
    if agent.last_seen_at is None or agent.status != "enabled":
        return False
    return utcnow() - agent.last_seen_at <= timedelta(seconds=window_s)


def disable_agent(db: Session, actor: Actor, agent_id: int) -> Agent:
    """Status disabled and the token replaced by one nobody knows (seed agent_disable)."""
    actor.require("admin")
    agent = get_agent(db, actor, agent_id)
    agent.status = "disabled"
    agent.token_hash = new_token("revoked")[1]
    audit.record(db, actor, "agent.disable", "agent", agent.id, agent.tenant_id)
    return agent


def delete_agent(db: Session, actor: Actor, agent_id: int) -> None:
    """Remove the agent; its active runs end failed, its jobs stay (disabled, no agent)."""
    from e3backup.server.services.runs import add_server_event, finish

    actor.require("admin")
    agent = get_agent(db, actor, agent_id)
    for run in db.scalars(select(Run).where(Run.agent_id == agent.id)):
        if run.status in ACTIVE_STATUSES and not is_terminal(run.status):
            status = "cancelled" if run.status == "queued" else "failed"
            finish(db, run, status, error="the agent was deleted")
            add_server_event(db, run, "AGENT_DELETED", {"agent_id": agent.id}, "error")
        run.agent_id = None
    for job in db.scalars(select(Job).where(Job.agent_id == agent.id)):
        job.agent_id = None
        job.enabled = False
    audit.record(
        db, actor, "agent.delete", "agent", agent.id, agent.tenant_id, {"hostname": agent.hostname}
    )
    db.flush()
    db.delete(agent)


def report_volumes(db: Session, agent: Agent, volumes: list[dict[str, Any]]) -> None:
    agent.volumes_json = volumes
    agent.volumes_reported_at = utcnow()
