"""The common case of the hot agent calls in one or two Core statements, no ORM session.

Each function answers the call when it is the common case (nothing to hand out, no pending
command, a progress update of a run in progress, events for the agent's own run) and returns
None otherwise; the caller then takes the full path in services/claims, commands, runs and
events, which owns every rule (claims, deliveries, status transitions, backup points). So the
rules live in one place and the shortcuts only ever decide "nothing special here".
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, literal, or_, select, union_all, update

from e3backup.server.db.base import utcnow
from e3backup.server.db.models import Agent, Command, Run
from e3backup.server.schemas.runs import RunUpdate, RunUpdateAnswer
from e3backup.server.services.agent_gate import AgentGate, AgentRef
from e3backup.server.services.runs import PROGRESS_FIELDS, RESULT_FIELDS

IN_PROGRESS = ("starting", "running")

_AGENT_BACKUP_RUNS = (
    select(Run.id, Run.status, Run.heartbeat_at)
    .where(
        Run.agent_id == bindparam("agent_id"),
        Run.run_type == "backup",
        Run.status.in_(("queued", *IN_PROGRESS)),
    )
    .order_by(Run.id)
    .limit(5)
)
_CANCELS = select(literal("cancel").label("kind"), Run.id).where(
    Run.agent_id == bindparam("agent_id"),
    Run.status.in_(IN_PROGRESS),
    Run.cancel_requested.is_(True),
)
_COMMANDS = select(literal("command").label("kind"), Command.id).where(
    Command.agent_id == bindparam("agent_id"),
    Command.status == "pending",
    Command.expires_at > bindparam("now"),
)
# A backup run next_run would hand out: queued, or in progress and silent inside the reclaim
# window (claims.next_run's two cases, decided in SQL).
_CLAIMABLE = select(literal("claim").label("kind"), Run.id).where(
    Run.agent_id == bindparam("agent_id"),
    Run.run_type == "backup",
    or_(
        Run.status == "queued",
        and_(
            Run.status.in_(IN_PROGRESS),
            Run.heartbeat_at < bindparam("grace_cutoff"),
            Run.heartbeat_at > bindparam("watchdog_cutoff"),
        ),
    ),
)
# The caller is still enabled with this token hash (the auth cache may be older).
_STILL_VALID = select(literal("agent").label("kind"), Agent.id).where(
    Agent.id == bindparam("agent_id"),
    Agent.status == "enabled",
    Agent.token_hash == bindparam("token_hash"),
)
_POLL = union_all(_CANCELS, _COMMANDS)
_COMBINED = {
    False: union_all(_CANCELS, _COMMANDS, _STILL_VALID),
    True: union_all(_CANCELS, _COMMANDS, _STILL_VALID, _CLAIMABLE),
}
_OWN_RUN = select(Run.id).where(
    Run.id == bindparam("run_id"), Run.agent_id == bindparam("agent_id")
)


def nothing_to_run(conn: Connection, agent_id: int, grace_s: float, watchdog_s: float) -> bool:
    """True when next_run has nothing for the agent: no queued backup run, and none of its
    in-progress runs gone silent inside the reclaim window (see claims.next_run)."""
    now = utcnow()
    grace_cutoff = now - timedelta(seconds=grace_s)
    watchdog_cutoff = now - timedelta(seconds=watchdog_s)
    for row in conn.execute(_AGENT_BACKUP_RUNS, {"agent_id": agent_id}):
        if row.status == "queued" or _reclaimable(row.heartbeat_at, grace_cutoff, watchdog_cutoff):
            return False
    return True


def _reclaimable(heartbeat: datetime | None, grace_cutoff: datetime, cutoff: datetime) -> bool:
    return heartbeat is not None and cutoff < heartbeat < grace_cutoff


def idle_poll(conn: Connection, agent_id: int, run_id: int | None) -> dict[str, Any] | None:
    """poll_commands' answer when the agent has no pending command (cancel flags only)."""
    rows = conn.execute(_POLL, {"agent_id": agent_id, "now": utcnow()}).all()
    return _cancels_only(rows, run_id)


def idle_combined_poll(
    conn: Connection,
    gate: AgentGate,
    agent: AgentRef,
    run_id: int | None,
    claim: bool,
    grace_s: float,
    watchdog_s: float,
) -> dict[str, Any] | None:
    """The combined poll's answer in ONE statement when there is nothing to hand out (no
    claimable run when `claim`, no pending command): cancel flags only, `run` null. The same
    statement re-checks that the agent is enabled with the cached token hash; if not, the cached
    entry is dropped and None returned (the full path re-authenticates and answers 401)."""
    now = utcnow()
    params: dict[str, Any] = {"agent_id": agent.id, "now": now, "token_hash": agent.token_hash}
    if claim:
        params["grace_cutoff"] = now - timedelta(seconds=grace_s)
        params["watchdog_cutoff"] = now - timedelta(seconds=watchdog_s)
    rows = conn.execute(_COMBINED[claim], params).all()
    if not any(row.kind == "agent" for row in rows):
        gate.invalidate(agent.id)
        return None
    answer = _cancels_only([row for row in rows if row.kind != "agent"], run_id)
    return None if answer is None else {"run": None, **answer}


def _cancels_only(rows: Any, run_id: int | None) -> dict[str, Any] | None:
    if any(row.kind != "cancel" for row in rows):
        return None
    cancelled = [row.id for row in rows]
    return {
        "commands": [
            {"command_id": None, "type": "cancel", "run_id": rid, "payload": {}}
            for rid in cancelled
        ],
        "cancel_requested": run_id is not None and run_id in cancelled,
    }


def progress_update(conn: Connection, agent_id: int, body: RunUpdate) -> RunUpdateAnswer | None:
    """One UPDATE for a progress report of the agent's in-progress run that keeps its status
    (the usual call every 2 s); None for anything else (status change, results, errors)."""
    if any(getattr(body, name) is not None for name in RESULT_FIELDS):
        return None
    statuses = (body.status,) if body.status is not None else IN_PROGRESS
    if not set(statuses) <= set(IN_PROGRESS):
        return None
    values: dict[str, Any] = {
        name: getattr(body, name) for name in PROGRESS_FIELDS if getattr(body, name) is not None
    }
    values["heartbeat_at"] = utcnow()
    statement = (
        update(Run)
        .where(Run.id == body.run_id, Run.agent_id == agent_id, Run.status.in_(statuses))
        .values(**values)
        .returning(Run.status, Run.cancel_requested)
    )
    row = conn.execute(statement).first()
    if row is None:
        return None
    return RunUpdateAnswer(status=row.status, cancel_requested=row.cancel_requested, applied=True)


def owns_run(conn: Connection, agent_id: int, run_id: int) -> bool:
    return conn.execute(_OWN_RUN, {"agent_id": agent_id, "run_id": run_id}).first() is not None
