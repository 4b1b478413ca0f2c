"""Recovery sessions (seed 003 "Recovery Session Token Behavior"): a bearer token bound to one
restore run, for a recovery environment that follows (and reports on) a long restore.

Stored hashed. It expires 6 h after creation; activity on its endpoints slides the expiry to
now + 6 h, but only once it is within 30 min of expiring (one write per ~5.5 h, not per call).
It opens nothing but its own run's recovery endpoints.

Bare-metal recovery (`e3backup agent recover`): the rescue environment fetches the run's restore
context (the backup point and the job's repository with its secrets) and then restores the run
itself. Its first progress update takes the run over: the restore command still waiting for the
agent is withdrawn (expired), so the run executes once; a command an agent already received
means that agent is restoring, and the takeover is refused.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from e3backup.server.crypto import SecretBox
from e3backup.server.db.base import utcnow
from e3backup.server.db.models import Agent, BackupPoint, Command, Job, RecoverySession, Run
from e3backup.server.services import audit, jobs, runs
from e3backup.server.services.auth import Actor
from e3backup.server.services.commands import RESTORE_TYPES
from e3backup.server.services.errors import Conflict, Invalid, NotFound, Unauthorized
from e3backup.server.services.run_states import is_terminal
from e3backup.server.services.tokens import hash_token, new_token

TOKEN_PREFIX = "e3r"
EXTENSION = timedelta(hours=6)
REFRESH_WITHIN = timedelta(minutes=30)


def create_session(db: Session, actor: Actor, run_id: int) -> tuple[RecoverySession, str]:
    """(session, secret) for an active restore run the operator can see."""
    actor.require("operator")
    run = runs.get_run(db, actor, run_id)
    if run.run_type not in RESTORE_TYPES:
        raise Invalid(f"run {run_id} is a {run.run_type} run; recovery sessions are for restores")
    if is_terminal(run.status):
        raise Conflict(f"run {run_id} already ended as {run.status}")
    secret, digest = new_token(TOKEN_PREFIX)
    point_id = (run.restore_json or {}).get("backup_point_id")
    session = RecoverySession(
        tenant_id=run.tenant_id,
        token_hash=digest,
        backup_point_id=point_id if isinstance(point_id, int) else None,
        run_id=run.id,
        created_by_user_id=actor.user_id,
        expires_at=utcnow() + EXTENSION,
    )
    db.add(session)
    db.flush()
    audit.record(db, actor, "recovery_session.create", "run", run.id, run.tenant_id)
    return session, secret


def slide_expiry(session: RecoverySession, now: datetime) -> None:
    if session.expires_at - now <= REFRESH_WITHIN:
        session.expires_at = now + EXTENSION


def open_session(db: Session, secret: str, run_id: int | None) -> RecoverySession:
    """The live session for `run_id` (its expiry slid; None: whatever run it is bound to);
    Unauthorized when unknown, revoked or expired, NotFound for a run it is not bound to."""
    session = db.scalar(
        select(RecoverySession).where(RecoverySession.token_hash == hash_token(secret))
    )
    now = utcnow()
    if session is None or session.revoked_at is not None or session.expires_at <= now:
        raise Unauthorized("recovery session token is invalid or expired")
    if run_id is not None and session.run_id != run_id:
        raise NotFound(f"run {run_id} not found")
    slide_expiry(session, now)
    return session


def session_actor(session: RecoverySession) -> Actor:
    """The session acting on its own run (operator rights, one tenant); audit names it."""
    return Actor(
        kind="recovery",
        user_id=session.created_by_user_id,
        tenant_id=session.tenant_id,
        tenant_ids=frozenset({session.tenant_id}),
        role="operator",
        label=f"recovery session {session.id}",
    )


def session_run(db: Session, session: RecoverySession) -> Run:
    return runs.get_run(db, session_actor(session), session.run_id)


def run_agent(db: Session, run: Run) -> Agent:
    """The agent the restore run is bound to: a recovery update reports in its name."""
    agent = db.get(Agent, run.agent_id) if run.agent_id is not None else None
    if agent is None:
        raise Conflict(f"run {run.id} has no agent any more (it was deleted)")
    return agent


def restore_context(db: Session, box: SecretBox, session: RecoverySession) -> dict[str, Any]:
    """What a rescue environment needs to restore the session's run itself: the backup point and
    the job's repository, secrets decrypted (only ever sent on this session's endpoint)."""
    run = session_run(db, session)
    if is_terminal(run.status):
        raise Conflict(f"run {run.id} already ended as {run.status}")
    params = dict(run.restore_json or {})
    point_id = session.backup_point_id or params.get("backup_point_id")
    point = db.get(BackupPoint, point_id) if isinstance(point_id, int) else None
    job = db.get(Job, run.job_id) if run.job_id is not None else None
    if point is None or job is None:
        raise Conflict(f"the backup point or job of run {run.id} no longer exists")
    manifests = dict(point.disk_manifests_json or {})
    wanted = [str(d) for d in params.get("disk_filter") or []]
    actor = session_actor(session)
    audit.record(db, actor, "recovery_session.restore_context", "run", run.id, run.tenant_id)
    return {
        "run_id": run.id,
        "session_expires_at": session.expires_at,
        "status": run.status,
        "cancel_requested": run.cancel_requested,
        "backup_point_id": point.id,
        "snapshot_id": point.snapshot_id or point.manifest_id or "",
        "backup_type": point.backup_type,
        "source": point.source_key or point.source_name or "",
        "disk_filter": wanted,
        "disk_manifests": {k: v for k, v in manifests.items() if not wanted or k in wanted},
        "format": params.get("format") or "raw",
        "job": jobs.agent_job_context(box, job),
    }


def take_over(db: Session, session: RecoverySession, run: Run) -> None:
    """The rescue environment restores `run` itself: withdraw the restore command still waiting
    for the agent (conditionally, racing the agent's poll); refuse when an agent received it."""
    held = db.scalars(
        select(Command).where(Command.run_id == run.id, Command.type.in_(RESTORE_TYPES))
    ).all()
    for command in held:
        if command.status == "expired":
            continue  # withdrawn by an earlier takeover (or never picked up)
        withdrawn = db.execute(
            update(Command)
            .where(Command.id == command.id, Command.status == "pending")
            .values(
                status="expired",
                completed_at=utcnow(),
                error=f"taken over by recovery session {session.id}",
            )
            .execution_options(synchronize_session=False)
        )
        if int(withdrawn.rowcount) != 1:  # type: ignore[attr-defined]
            raise Conflict(
                f"run {run.id} is being restored by agent {run.agent_id}; "
                "a recovery environment cannot take it over"
            )
