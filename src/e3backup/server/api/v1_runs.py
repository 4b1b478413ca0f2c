"""Client API: runs (filters, pagination), detail with progress, cancel, events, logs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from e3backup.server.deps import CurrentActor, Db
from e3backup.server.schemas.common import (
    CursorQuery,
    FilterQuery,
    IdPath,
    IdQuery,
    OffsetQuery,
    Page,
)
from e3backup.server.schemas.runs import RunEventOut, RunLogOut, RunOut
from e3backup.server.services import events, runs

router = APIRouter(prefix="/api/v1", tags=["runs"])


@router.get("/runs", response_model=Page[RunOut])
def list_runs(
    actor: CurrentActor,
    db: Db,
    job_id: IdQuery = None,
    agent_id: IdQuery = None,
    status: FilterQuery = None,
    run_type: FilterQuery = None,
    engine: FilterQuery = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: OffsetQuery = 0,
) -> Page[RunOut]:
    flt = runs.RunFilter(job_id, agent_id, status, run_type, engine, since, until)
    rows, total = runs.list_runs(db, actor, flt, limit, offset)
    return Page(
        items=[RunOut.model_validate(r) for r in rows], total=total, limit=limit, offset=offset
    )


@router.get("/runs/{run_id}", response_model=RunOut)
def get_run(run_id: IdPath, actor: CurrentActor, db: Db) -> RunOut:
    return RunOut.model_validate(runs.get_run(db, actor, run_id))


@router.post("/runs/{run_id}/cancel", response_model=RunOut)
def cancel_run(run_id: IdPath, actor: CurrentActor, db: Db) -> RunOut:
    return RunOut.model_validate(runs.cancel_run(db, actor, run_id))


@router.get("/runs/{run_id}/events", response_model=list[RunEventOut])
def run_events(
    run_id: IdPath,
    actor: CurrentActor,
    db: Db,
    after_event_id: CursorQuery = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> list[RunEventOut]:
    run = runs.get_run(db, actor, run_id)
    return events.list_events(db, run.id, after_event_id, limit)


@router.get("/runs/{run_id}/logs", response_model=list[RunLogOut])
def run_logs(
    run_id: IdPath,
    actor: CurrentActor,
    db: Db,
    after_id: CursorQuery = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> list[RunLogOut]:
    run = runs.get_run(db, actor, run_id)
    return [
        RunLogOut.model_validate(line) for line in events.list_logs(db, run.id, after_id, limit)
    ]
