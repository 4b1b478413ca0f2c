"""Commands to agents: queued by services, delivered by the one combined poll, completed by the
agent with a result. Only the owning agent ever sees a command; secrets in its payload are
decrypted at delivery."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from e3backup.server.crypto import SecretBox
from e3backup.server.db.base import utcnow
from e3backup.server.db.models import Agent, Command, Job, Run
from e3backup.server.db.models.commands import COMMAND_TYPES
from e3backup.server.services import jobs
from e3backup.server.services.errors import Conflict, Invalid, NotFound

POLL_BATCH = 20
_SECRETS_CONTEXT = "commands.secrets_enc"
RESTORE_TYPES = ("restore", "hyperv_restore")


def enqueue(
    db: Session,
    box: SecretBox,
    *,
    agent: Agent,
    type: str,
    payload: dict[str, Any] | None = None,
    job_id: int | None = None,
    run_id: int | None = None,
    secrets: dict[str, Any] | None = None,
    ttl_s: float = 3600.0,
    user_id: int | None = None,
) -> Command:
    if type not in COMMAND_TYPES:
        raise Invalid(f"unknown command type {type!r}", "type")
    command = Command(
        tenant_id=agent.tenant_id,
        agent_id=agent.id,
        job_id=job_id,
        run_id=run_id,
        type=type,
        status="pending",
        payload_json=payload or {},
        secrets_enc=box.seal(json.dumps(secrets), _SECRETS_CONTEXT) if secrets else None,
        requested_by_user_id=user_id,
        expires_at=utcnow() + timedelta(seconds=ttl_s),
    )
    db.add(command)
    db.flush()
    return command


def _delivery(db: Session, box: SecretBox, command: Command) -> dict[str, Any]:
    body: dict[str, Any] = {
        "command_id": command.id,
        "type": command.type,
        "run_id": command.run_id,
        "job_id": command.job_id,
        "payload": dict(command.payload_json or {}),
    }
    if command.job_id is not None:
        job = db.get(Job, command.job_id)
        if job is not None:
            body["job"] = jobs.agent_job_context(box, job)
    if command.secrets_enc:
        body["payload"].update(json.loads(box.open(command.secrets_enc, _SECRETS_CONTEXT)))
    if command.type == "test_destination":
        body["job"] = _destination_under_test(body.get("job") or {}, body["payload"])
    return body


def _destination_under_test(job: dict[str, Any], sent: dict[str, Any]) -> dict[str, Any]:
    """test_destination: the fields sent with the command replace the saved job's (if any)."""
    merged = {**job, **sent}
    where = Job(
        dest_type=merged.get("dest_type") or "local",
        dest_local_path=merged.get("dest_local_path") or "",
        dest_bucket=merged.get("dest_bucket") or "",
        dest_prefix=merged.get("dest_prefix") or "",
    )
    merged["repository"] = jobs.repository_url(where)
    return merged


def _mark_restore_run_starting(db: Session, command: Command) -> None:
    if command.type in RESTORE_TYPES and command.run_id is not None:
        now = utcnow()
        db.execute(
            update(Run)
            .where(Run.id == command.run_id, Run.status == "queued")
            .values(status="starting", claimed_at=now, heartbeat_at=now)
            .execution_options(synchronize_session=False)
        )


def poll(db: Session, box: SecretBox, agent: Agent, run_id: int | None) -> dict[str, Any]:
    """Cancel flags of the agent's in-progress runs plus its pending commands (then delivered).

    Two indexed queries for an idle agent, whatever the number of agents.
    """
    now = utcnow()
    cancelled_runs = db.scalars(
        select(Run.id).where(
            Run.agent_id == agent.id,
            Run.status.in_(("starting", "running")),
            Run.cancel_requested.is_(True),
        )
    ).all()
    out: list[dict[str, Any]] = [
        {"command_id": None, "type": "cancel", "run_id": rid, "payload": {}}
        for rid in cancelled_runs
    ]
    pending = db.scalars(
        select(Command)
        .where(Command.agent_id == agent.id, Command.status == "pending", Command.expires_at > now)
        .order_by(Command.id)
        .limit(POLL_BATCH)
    ).all()
    for command in pending:
        claimed = db.execute(
            update(Command)
            .where(Command.id == command.id, Command.status == "pending")
            .values(status="delivered", delivered_at=now)
            .execution_options(synchronize_session=False)
        )
        if int(claimed.rowcount) == 1:  # type: ignore[attr-defined]
            _mark_restore_run_starting(db, command)
            out.append(_delivery(db, box, command))
    return {
        "commands": out,
        "cancel_requested": run_id is not None and run_id in cancelled_runs,
    }


def agent_command(db: Session, agent: Agent, command_id: int) -> Command:
    command = db.get(Command, command_id)
    if command is None or command.agent_id != agent.id:
        raise NotFound(f"command {command_id} not found")
    return command


def complete(
    db: Session,
    agent: Agent,
    command_id: int,
    status: str,
    result: Any = None,
    error: str | None = None,
) -> Command:
    """Idempotent: repeating the same completion is a no-op; changing it is a Conflict."""
    command = agent_command(db, agent, command_id)
    if command.status in ("completed", "failed"):
        if command.status != status:
            raise Conflict(f"command {command_id} was already {command.status}")
        return command
    if command.status == "expired":
        raise Conflict(f"command {command_id} expired before it was completed")
    command.status = status
    command.result_json = result
    command.error = error
    command.completed_at = utcnow()
    return command
