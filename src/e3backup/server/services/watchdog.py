"""The watchdog tick: close what agents left hanging (seed "Heartbeats, watchdog, and resume").

- A `starting`/`running` run whose last heartbeat (or claim) is older than
  `agent_watchdog_timeout_s` is `failed` with AGENT_OFFLINE.
- A run whose cancel was requested more than `cancel_timeout_s` ago and is still active is
  `cancelled` with CANCEL_TIMEOUT (checked first: a run the user cancelled ends cancelled,
  not failed, even when its agent also went silent).
- A command still pending/delivered past its `expires_at` is `expired`; a queued restore run
  that was waiting for it fails with COMMAND_EXPIRED (no agent will ever start it).
- Bare-metal recovery: while a live recovery session is bound to a restore run, its restore
  command is not expired (a rescue environment may still take the run over: the host's agent
  may be dead) and, once no agent has received that command, the run is the session's to
  drive: it is not failed for silence. Agents never get a command past its `expires_at`, so a
  revived agent cannot run it. When the session expires or is revoked, the rules above apply.

Every change is a conditional UPDATE that re-checks the condition, so replicas running the
same tick close each row once; PostgreSQL replicas also skip rows another one has locked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.orm import Session

from e3backup.server.db.base import utcnow
from e3backup.server.db.models import Command, RecoverySession, Run
from e3backup.server.db.models.commands import OPEN_COMMAND_STATUSES
from e3backup.server.services import server_events
from e3backup.server.services.commands import RESTORE_TYPES

log = logging.getLogger(__name__)

IN_PROGRESS = ("starting", "running")
BATCH_SIZE = 500


@dataclass
class WatchdogReport:
    failed_offline: list[int] = field(default_factory=list)
    cancelled_timeout: list[int] = field(default_factory=list)
    expired_commands: list[int] = field(default_factory=list)
    failed_restores: list[int] = field(default_factory=list)


def _last_sign_of_life() -> ColumnElement[Any]:
    return func.coalesce(Run.heartbeat_at, Run.claimed_at, Run.created_at)


def _live_recovery_session(run_id: Any, now: datetime) -> ColumnElement[bool]:
    return (
        select(RecoverySession.id)
        .where(
            RecoverySession.run_id == run_id,
            RecoverySession.revoked_at.is_(None),
            RecoverySession.expires_at > now,
        )
        .exists()
    )


def _driven_by_recovery(now: datetime) -> ColumnElement[bool]:
    """A live recovery session is bound to the run and no agent received its restore."""
    received = (
        select(Command.id)
        .where(
            Command.run_id == Run.id,
            Command.type.in_(RESTORE_TYPES),
            Command.delivered_at.is_not(None),
        )
        .exists()
    )
    return and_(_live_recovery_session(Run.id, now), ~received)


def _silent_since(cutoff: datetime, now: datetime) -> ColumnElement[bool]:
    return and_(
        Run.status.in_(IN_PROGRESS), _last_sign_of_life() < cutoff, ~_driven_by_recovery(now)
    )


def _cancel_overdue(cutoff: datetime) -> ColumnElement[bool]:
    return and_(
        Run.status.in_(IN_PROGRESS),
        Run.cancel_requested.is_(True),
        func.coalesce(Run.cancel_requested_at, Run.created_at) < cutoff,
    )


def _candidates(db: Session, condition: ColumnElement[bool]) -> list[int]:
    query = select(Run.id).where(condition).order_by(Run.id).limit(BATCH_SIZE)
    if db.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(db.scalars(query))


def _close(
    db: Session, run_id: int, condition: ColumnElement[bool], now: datetime, **values: Any
) -> bool:
    result = db.execute(
        update(Run)
        .where(Run.id == run_id, condition)
        .values(finished_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def close_cancel_timeouts(
    db: Session, now: datetime, cancel_timeout_s: float, report: WatchdogReport
) -> None:
    condition = _cancel_overdue(now - timedelta(seconds=cancel_timeout_s))
    for run_id in _candidates(db, condition):
        note = "cancel requested; the agent did not confirm it in time"
        if _close(db, run_id, condition, now, status="cancelled", error=note):
            report.cancelled_timeout.append(run_id)
            server_events.record(
                db,
                run_id,
                "CANCEL_TIMEOUT",
                key="watchdog:cancel-timeout",
                params={"timeout_seconds": int(cancel_timeout_s)},
                level="warning",
                at=now,
            )


def fail_silent_runs(db: Session, now: datetime, timeout_s: float, report: WatchdogReport) -> None:
    condition = _silent_since(now - timedelta(seconds=timeout_s), now)
    for run_id in _candidates(db, condition):
        message = f"the agent sent no heartbeat for {int(timeout_s)} s"
        closed = _close(
            db, run_id, condition, now, status="failed", error=message, error_code="AGENT_OFFLINE"
        )
        if closed:
            report.failed_offline.append(run_id)
            server_events.record(
                db,
                run_id,
                "AGENT_OFFLINE",
                key="watchdog:agent-offline",
                params={"silent_seconds": int(timeout_s)},
                level="error",
                at=now,
            )


def expire_commands(db: Session, now: datetime, report: WatchdogReport) -> None:
    overdue = and_(
        Command.status.in_(OPEN_COMMAND_STATUSES),
        Command.expires_at < now,
        ~_live_recovery_session(Command.run_id, now),
    )
    query = select(Command.id, Command.run_id, Command.type).where(overdue).limit(BATCH_SIZE)
    if db.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    for command_id, run_id, command_type in db.execute(query).all():
        expired = db.execute(
            update(Command)
            .where(Command.id == command_id, overdue)
            .values(status="expired", completed_at=now, error="expired before completion")
            .execution_options(synchronize_session=False)
        )
        if expired.rowcount != 1:  # type: ignore[attr-defined]
            continue
        report.expired_commands.append(command_id)
        if run_id is None:
            continue
        waiting = and_(Run.status == "queued", Run.run_type != "backup")
        note = f"the {command_type} command expired before an agent picked it up"
        if _close(db, run_id, waiting, now, status="failed", error=note):
            report.failed_restores.append(run_id)
            server_events.record(
                db,
                run_id,
                "COMMAND_EXPIRED",
                key=f"watchdog:command-expired:{command_id}",
                params={"command_type": command_type},
                level="error",
                at=now,
            )


def tick(
    db: Session,
    watchdog_timeout_s: float,
    cancel_timeout_s: float,
    now: datetime | None = None,
) -> WatchdogReport:
    """One watchdog pass in the caller's transaction (the caller commits)."""
    now = now or utcnow()
    report = WatchdogReport()
    close_cancel_timeouts(db, now, cancel_timeout_s, report)
    fail_silent_runs(db, now, watchdog_timeout_s, report)
    expire_commands(db, now, report)
    if report.failed_offline or report.cancelled_timeout or report.expired_commands:
        log.warning(
            "watchdog: %d silent run(s) failed, %d cancel(s) closed, %d command(s) expired",
            len(report.failed_offline),
            len(report.cancelled_timeout),
            len(report.expired_commands),
        )
    return report
