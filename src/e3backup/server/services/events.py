"""Run events (idempotent by the agent's event_id) and run log lines."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from e3backup.server.db.base import utcnow
from e3backup.server.db.models import Run, RunEvent, RunLog
from e3backup.server.schemas.runs import EventIn, LogLineIn, RunEventOut

LEVELS = {"warning": "warn"}


def _format(message_id: str, params: dict[str, Any]) -> str:
    """The catalogue's text when server/event_catalog.py exists, else a neutral rendering."""
    try:
        from e3backup.server.event_catalog import format_event
    except ImportError:
        details = ", ".join(f"{k}={v}" for k, v in params.items())
        return f"{message_id}: {details}" if details else message_id
    return str(format_event(message_id, params))


def _insert_ignoring_duplicates(conn: Connection) -> Any:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(RunEvent).on_conflict_do_nothing(
            index_elements=["run_id", "event_id"]
        )
    if dialect == "sqlite":
        return sqlite.insert(RunEvent).on_conflict_do_nothing(index_elements=["run_id", "event_id"])
    return insert(RunEvent)


def push_events(conn: Connection, run_id: int, events: list[EventIn]) -> tuple[int, int]:
    """(accepted, duplicates): an event_id already stored for the run is skipped. One
    INSERT ... ON CONFLICT DO NOTHING on the caller's connection (a session's or a bare one)."""
    if not events:
        return 0, 0
    now = utcnow()
    rows = {
        e.event_id: {
            "run_id": run_id,
            "event_id": e.event_id,
            "ts": e.ts or now,
            "type": e.type,
            "level": LEVELS.get(e.level, e.level),
            "message_id": e.message_id,
            "params_json": e.params,
            "source": "agent",
            "created_at": now,
        }
        for e in events
    }
    # RETURNING names the rows really inserted (drivers disagree on executemany row counts).
    statement = _insert_ignoring_duplicates(conn).returning(RunEvent.event_id)
    accepted = len(conn.execute(statement, list(rows.values())).all())
    return accepted, len(events) - accepted


def list_events(db: Session, run_id: int, after_event_id: int, limit: int) -> list[RunEventOut]:
    rows = db.scalars(
        select(RunEvent)
        .where(RunEvent.run_id == run_id, RunEvent.id > after_event_id)
        .order_by(RunEvent.id)
        .limit(limit)
    )
    return [
        RunEventOut(
            id=e.id,
            run_id=e.run_id,
            event_id=e.event_id,
            ts=e.ts,
            type=e.type,
            level=e.level,
            message_id=e.message_id,
            params=e.params_json,
            message=_format(e.message_id, e.params_json or {}),
        )
        for e in rows
    ]


def push_logs(db: Session, run: Run, lines: list[LogLineIn]) -> int:
    now = utcnow()
    db.add_all(
        RunLog(run_id=run.id, ts=line.ts or now, level=line.level, message=line.message)
        for line in lines
    )
    return len(lines)


def list_logs(db: Session, run_id: int, after_id: int, limit: int) -> list[RunLog]:
    return list(
        db.scalars(
            select(RunLog)
            .where(RunLog.run_id == run_id, RunLog.id > after_id)
            .order_by(RunLog.id)
            .limit(limit)
        )
    )
