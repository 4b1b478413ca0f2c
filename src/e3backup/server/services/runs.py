"""Runs: creation (run now, scheduler, restores), the agent's progress updates, cancellation,
and tenant-scoped reads."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from e3backup.server.db.base import utcnow
from e3backup.server.db.models import Agent, Command, Job, Run, RunEvent
from e3backup.server.db.models.runs import ACTIVE_STATUSES
from e3backup.server.schemas.runs import RunUpdate, RunUpdateAnswer
from e3backup.server.services import audit, backup_points
from e3backup.server.services.auth import Actor
from e3backup.server.services.errors import Conflict, Invalid, NotFound
from e3backup.server.services.run_states import is_terminal, transition

PROGRESS_FIELDS = (
    "progress_pct",
    "bytes_transferred",
    "bytes_processed",
    "bytes_total",
    "objects_transferred",
    "objects_total",
    "speed_bytes_per_sec",
    "eta_seconds",
    "current_item",
    "error",
    "error_code",
    "log_ref",
    "disk_manifests_json",
)
RESULT_FIELDS = {
    "vm_results": "vm_results_json",
    "source_results": "source_results_json",
    "repository_stats": "stats_json",
    "result": "result_json",
}


def active_backup_run(db: Session, job_id: int) -> Run | None:
    return db.scalar(
        select(Run).where(
            Run.job_id == job_id, Run.run_type == "backup", Run.status.in_(ACTIVE_STATUSES)
        )
    )


def new_run(
    db: Session,
    job: Job,
    *,
    run_type: str = "backup",
    trigger: str = "manual",
    user_id: int | None = None,
    scheduled_for: datetime | None = None,
    restore: dict[str, Any] | None = None,
    agent_id: int | None = None,
) -> Run:
    """A queued run bound to the job's agent. One active backup run per job (also enforced by
    a partial unique index, so a race between replicas ends in an IntegrityError)."""
    if run_type == "backup" and active_backup_run(db, job.id) is not None:
        raise Conflict(f"job {job.id} already has an active run")
    bound_agent = agent_id if agent_id is not None else job.agent_id
    if bound_agent is None:
        raise Conflict(f"job {job.id} has no agent (it was deleted); assign one first")
    run = Run(
        uuid=str(uuid.uuid4()),
        tenant_id=job.tenant_id,
        job_id=job.id,
        agent_id=bound_agent,
        run_type=run_type,
        engine=job.engine,
        status="queued",
        trigger=trigger,
        scheduled_for=scheduled_for,
        requested_by_user_id=user_id,
        restore_json=restore,
    )
    db.add(run)
    db.flush()
    return run


def start_manual_run(db: Session, actor: Actor, job_id: int) -> Run:
    from e3backup.server.services.jobs import get_job

    actor.require("operator")
    job = get_job(db, actor, job_id)
    run = new_run(db, job, user_id=actor.user_id)
    audit.record(db, actor, "run.start", "run", run.id, run.tenant_id, {"job_id": job.id})
    return run


def get_run(db: Session, actor: Actor, run_id: int) -> Run:
    run = db.get(Run, run_id)
    if run is None or not actor.sees(run.tenant_id):
        raise NotFound(f"run {run_id} not found")
    return run


@dataclass(frozen=True)
class RunFilter:
    job_id: int | None = None
    agent_id: int | None = None
    status: str | None = None
    run_type: str | None = None
    engine: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_runs(
    db: Session, actor: Actor, flt: RunFilter, limit: int, offset: int
) -> tuple[list[Run], int]:
    where: list[Any] = [Run.tenant_id.in_(actor.tenant_ids)]
    for name in ("job_id", "agent_id", "status", "run_type", "engine"):
        value = getattr(flt, name)
        if value is not None:
            where.append(getattr(Run, name) == value)
    if flt.since is not None:
        where.append(Run.created_at >= flt.since)
    if flt.until is not None:
        where.append(Run.created_at < flt.until)
    total = db.scalar(select(func.count()).select_from(Run).where(*where)) or 0
    query = select(Run).where(*where).order_by(Run.id.desc()).limit(limit).offset(offset)
    return list(db.scalars(query)), total


def add_server_event(
    db: Session,
    run: Run,
    message_id: str,
    params: dict[str, Any] | None = None,
    level: str = "info",
) -> None:
    """An event the server itself records (cancellation, watchdog...)."""
    db.add(
        RunEvent(
            run_id=run.id,
            event_id=f"server-{uuid.uuid4()}",
            ts=utcnow(),
            type="server",
            level=level,
            message_id=message_id,
            params_json=params or {},
            source="server",
        )
    )


def finish(db: Session, run: Run, status: str, error: str | None = None) -> None:
    """Server-side end of a run (cancel of a queued run, watchdog, deleted agent)."""
    transition(run.status, status)
    run.status = status
    run.finished_at = utcnow()
    if error is not None:
        run.error = error
    if status == "cancelled":  # a restore's undelivered command goes with it
        for command in db.scalars(
            select(Command).where(Command.run_id == run.id, Command.status == "pending")
        ):
            command.status = "expired"
            command.error = "run ended before the agent picked the command up"


def cancel_run(db: Session, actor: Actor, run_id: int) -> Run:
    """Queued: cancelled at once. In progress: cancel_requested, the agent stops it."""
    actor.require("operator")
    run = get_run(db, actor, run_id)
    if is_terminal(run.status):
        raise Conflict(f"run {run_id} already ended as {run.status}")
    if not run.cancel_requested:
        run.cancel_requested = True
        run.cancel_requested_at = utcnow()
    if run.status == "queued":
        finish(db, run, "cancelled")
        add_server_event(db, run, "CANCELLED", {"reason": "cancelled before it started"})
    else:
        add_server_event(db, run, "CANCEL_REQUESTED", {"by": actor.label}, "warn")
    audit.record(db, actor, "run.cancel", "run", run.id, run.tenant_id)
    return run


def agent_run(db: Session, agent: Agent, run_id: int) -> Run:
    run = db.get(Run, run_id)
    if run is None or run.agent_id != agent.id:
        raise NotFound(f"run {run_id} not found")
    return run


def _apply_progress(run: Run, update: RunUpdate) -> None:
    for name in PROGRESS_FIELDS:
        value = getattr(update, name)
        if value is not None:
            setattr(run, name, value)
    for name, column in RESULT_FIELDS.items():
        value = getattr(update, name)
        if value is not None:
            setattr(run, column, value)


def apply_update(db: Session, agent: Agent, update: RunUpdate) -> RunUpdateAnswer:
    """An agent's RunUpdate; every call is a heartbeat."""
    run = agent_run(db, agent, update.run_id)
    now = utcnow()
    if is_terminal(run.status):
        if update.status is not None and update.status != run.status:
            transition(run.status, update.status)  # raises Conflict
        return RunUpdateAnswer(
            status=run.status, cancel_requested=run.cancel_requested, applied=False
        )
    if run.status == "queued" and update.status is None:
        raise Invalid("a queued run needs a status (starting or running) first", "status")
    changed = update.status is not None and transition(run.status, update.status)
    _apply_progress(run, update)
    run.heartbeat_at = now
    if changed:
        assert update.status is not None
        run.status = update.status
        if update.status in ("starting", "running") and run.claimed_at is None:
            run.claimed_at = now
        if update.status == "running" and run.started_at is None:
            run.started_at = now
        if is_terminal(update.status):
            run.finished_at = now
            if run.started_at is None:
                run.started_at = run.claimed_at or now
            backup_points.record_for_run(db, run, update)
    return RunUpdateAnswer(status=run.status, cancel_requested=run.cancel_requested, applied=True)
