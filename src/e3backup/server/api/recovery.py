"""Recovery sessions (seed 003): `POST /api/v1/runs/{id}/recovery_session` hands an operator a
token bound to one restore run; `/api/recovery/*` (seed cloudbackup_recovery_*: run status,
events, poll_cancel, cancel, update_run, push_events, refresh_session) accept only that token,
as `Authorization: Bearer <token>`, and only for its run. Every call is activity that slides
the session's expiry (see services/recovery.py).

Bare-metal recovery adds `restore_context` (the point and the job's repository, secrets
included, for `e3backup agent recover`); its first update_run takes the run over from the agent
whose restore command is still waiting."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy.orm import Session

from e3backup.server.db.models import RecoverySession
from e3backup.server.deps import Ctx, CurrentActor, Db, client_ip
from e3backup.server.schemas.common import CursorQuery, IdPath
from e3backup.server.schemas.recovery import (
    RecoveryCancelState,
    RecoveryRestoreContext,
    RecoveryRunRef,
    RecoveryRunStatus,
    RecoverySessionOut,
    RecoverySessionRef,
    RecoverySessionState,
)
from e3backup.server.schemas.runs import (
    PushEvents,
    PushEventsAnswer,
    RunEventOut,
    RunOut,
    RunUpdate,
    RunUpdateAnswer,
)
from e3backup.server.services import events, recovery, runs
from e3backup.server.services.errors import Unauthorized

router = APIRouter(tags=["recovery"])


@router.post("/api/v1/runs/{run_id}/recovery_session", response_model=RecoverySessionOut)
def create_recovery_session(run_id: IdPath, actor: CurrentActor, db: Db) -> RecoverySessionOut:
    session, secret = recovery.create_session(db, actor, run_id)
    return RecoverySessionOut(
        session_token=secret, run_id=session.run_id, session_expires_at=session.expires_at
    )


def _session(request: Request, ctx: Ctx, db: Session, run_id: int | None) -> RecoverySession:
    key = f"ip:{client_ip(request)}"
    ctx.limiter.check(key)
    try:
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized("send the recovery session token as 'Authorization: Bearer ...'")
        return recovery.open_session(db, secret.strip(), run_id)
    except Unauthorized:
        ctx.limiter.failed(key)
        raise


@router.get("/api/recovery/runs/{run_id}", response_model=RecoveryRunStatus)
def run_status(run_id: IdPath, request: Request, ctx: Ctx, db: Db) -> RecoveryRunStatus:
    session = _session(request, ctx, db, run_id)
    run = recovery.session_run(db, session)
    return RecoveryRunStatus(
        run_id=run.id, session_expires_at=session.expires_at, run=RunOut.model_validate(run)
    )


@router.get("/api/recovery/runs/{run_id}/events", response_model=list[RunEventOut])
def run_events(
    run_id: IdPath,
    request: Request,
    ctx: Ctx,
    db: Db,
    after_event_id: CursorQuery = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> list[RunEventOut]:
    session = _session(request, ctx, db, run_id)
    return events.list_events(db, session.run_id, after_event_id, limit)


@router.get("/api/recovery/runs/{run_id}/poll_cancel", response_model=RecoveryCancelState)
def poll_cancel(run_id: IdPath, request: Request, ctx: Ctx, db: Db) -> RecoveryCancelState:
    session = _session(request, ctx, db, run_id)
    run = recovery.session_run(db, session)
    return RecoveryCancelState(
        run_id=run.id,
        session_expires_at=session.expires_at,
        status=run.status,
        cancel_requested=run.cancel_requested,
    )


@router.post("/api/recovery/cancel", response_model=RecoveryCancelState)
def cancel(body: RecoveryRunRef, request: Request, ctx: Ctx, db: Db) -> RecoveryCancelState:
    session = _session(request, ctx, db, body.run_id)
    run = runs.cancel_run(db, recovery.session_actor(session), session.run_id)
    return RecoveryCancelState(
        run_id=run.id,
        session_expires_at=session.expires_at,
        status=run.status,
        cancel_requested=run.cancel_requested,
    )


@router.post("/api/recovery/update_run", response_model=RunUpdateAnswer)
def update_run(body: RunUpdate, request: Request, ctx: Ctx, db: Db) -> RunUpdateAnswer:
    """The recovery environment reports progress on its restore run (seed RunUpdate names)."""
    session = _session(request, ctx, db, body.run_id)
    run = recovery.session_run(db, session)
    recovery.take_over(db, session, run)
    return runs.apply_update(db, recovery.run_agent(db, run), body)


@router.post("/api/recovery/push_events", response_model=PushEventsAnswer)
def push_events(body: PushEvents, request: Request, ctx: Ctx, db: Db) -> PushEventsAnswer:
    session = _session(request, ctx, db, body.run_id)
    run = recovery.session_run(db, session)
    accepted, duplicates = events.push_events(db.connection(), run.id, body.events)
    return PushEventsAnswer(accepted=accepted, duplicates=duplicates)


@router.post("/api/recovery/refresh_session", response_model=RecoverySessionState)
def refresh_session(
    body: RecoveryRunRef, request: Request, ctx: Ctx, db: Db
) -> RecoverySessionState:
    """Seed cloudbackup_recovery_refresh_session: the (possibly slid) expiry."""
    session = _session(request, ctx, db, body.run_id)
    return RecoverySessionState(run_id=session.run_id, session_expires_at=session.expires_at)


@router.post("/api/recovery/restore_context", response_model=RecoveryRestoreContext)
def restore_context(
    body: RecoverySessionRef, request: Request, ctx: Ctx, db: Db
) -> RecoveryRestoreContext:
    """For `e3backup agent recover`: the run's backup point and repository (with its secrets:
    never logged). 409 when the run already ended."""
    session = _session(request, ctx, db, body.run_id)
    return RecoveryRestoreContext.model_validate(recovery.restore_context(db, ctx.box, session))
