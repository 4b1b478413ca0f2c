"""Events the server itself writes on a run (scheduler, watchdog), idempotent across replicas.

Each event's `event_id` is derived from what caused it (`key`), so two replicas noticing the
same thing insert one row: the insert is `ON CONFLICT DO NOTHING` on UNIQUE(run_id, event_id).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Insert, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from e3backup.server.db.base import utcnow
from e3backup.server.db.models import RunEvent

_EVENTS: Table = RunEvent.__table__  # type: ignore[assignment]


def insert_ignoring_conflicts(db: Session, table: Table, values: dict[str, Any]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING on SQLite or PostgreSQL; True if a row was added."""
    statement: Insert
    if db.get_bind().dialect.name == "postgresql":
        statement = postgresql.insert(table).values(values).on_conflict_do_nothing()
    else:
        statement = sqlite.insert(table).values(values).on_conflict_do_nothing()
    result = db.execute(statement)
    return bool(result.rowcount)  # type: ignore[attr-defined]


def record(
    db: Session,
    run_id: int,
    message_id: str,
    key: str,
    params: dict[str, Any] | None = None,
    level: str = "info",
    at: datetime | None = None,
) -> bool:
    """Add a server event to `run_id` unless one with the same `key` exists; True if added."""
    when = at or utcnow()
    return insert_ignoring_conflicts(
        db,
        _EVENTS,
        {
            "run_id": run_id,
            "event_id": f"server:{key}"[:100],
            "ts": when,
            "type": "server",
            "level": level,
            "message_id": message_id,
            "params_json": params or {},
            "source": "server",
            "created_at": when,
        },
    )
