"""Recovery sessions (seed 003 "Recovery Session Token Behavior"): a bearer token bound to one
restore run, for a recovery environment that follows (and reports on) a long restore.

Stored hashed. It expires 6 h after creation; activity on its endpoints slides the expiry to
now + 6 h, but only once it is within 30 min of expiring (one write per ~5.5 h, not per call).
It opens nothing but its own run's recovery endpoints.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from e3backup.server.db.base import utcnow
from e3backup.server.db.models import Agent, RecoverySession, Run
from e3backup.server.services import audit, runs
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


def open_session(db: Session, secret: str, run_id: int) -> RecoverySession:
    """The live session for `run_id` (its expiry slid); Unauthorized when unknown, revoked or
    expired, NotFound for a run the session is not bound to."""
    session = db.scalar(
        select(RecoverySession).where(RecoverySession.token_hash == hash_token(secret))
    )
    now = utcnow()
    if session is None or session.revoked_at is not None or session.expires_at <= now:
        raise Unauthorized("recovery session token is invalid or expired")
    if session.run_id != run_id:
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
