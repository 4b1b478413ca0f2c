"""Client API: jobs CRUD, run now, maintenance commands."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from e3backup.server.deps import Ctx, CurrentActor, Db
from e3backup.server.schemas.agent import Ok
from e3backup.server.schemas.client import CommandOut, MaintenanceRequest
from e3backup.server.schemas.common import IdPath, IdQuery, OffsetQuery, Page
from e3backup.server.schemas.jobs import JobCreate, JobOut, JobUpdate
from e3backup.server.schemas.runs import RunOut
from e3backup.server.services import jobs, repositories, runs

router = APIRouter(prefix="/api/v1", tags=["jobs"])


@router.get("/jobs", response_model=Page[JobOut])
def list_jobs(
    actor: CurrentActor,
    db: Db,
    agent_id: IdQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: OffsetQuery = 0,
) -> Page[JobOut]:
    rows, total = jobs.list_jobs(db, actor, agent_id, limit, offset)
    return Page(items=[jobs.job_out(j) for j in rows], total=total, limit=limit, offset=offset)


@router.post("/jobs", response_model=JobOut, status_code=201)
def create_job(body: JobCreate, actor: CurrentActor, ctx: Ctx, db: Db) -> JobOut:
    return jobs.job_out(jobs.create_job(db, ctx.box, actor, body))


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: IdPath, actor: CurrentActor, db: Db) -> JobOut:
    return jobs.job_out(jobs.get_job(db, actor, job_id))


@router.patch("/jobs/{job_id}", response_model=JobOut)
def update_job(job_id: IdPath, body: JobUpdate, actor: CurrentActor, ctx: Ctx, db: Db) -> JobOut:
    return jobs.job_out(jobs.update_job(db, ctx.box, actor, job_id, body))


@router.delete("/jobs/{job_id}", response_model=Ok)
def delete_job(job_id: IdPath, actor: CurrentActor, db: Db) -> Ok:
    jobs.delete_job(db, actor, job_id)
    return Ok()


@router.post("/jobs/{job_id}/runs", response_model=RunOut, status_code=201)
def run_now(job_id: IdPath, actor: CurrentActor, db: Db) -> RunOut:
    return RunOut.model_validate(runs.start_manual_run(db, actor, job_id))


@router.post("/jobs/{job_id}/maintenance", response_model=CommandOut, status_code=202)
def maintenance(
    job_id: IdPath, body: MaintenanceRequest, actor: CurrentActor, ctx: Ctx, db: Db
) -> CommandOut:
    """Repository check (quick) or check + forget + prune (full), run by the job's agent."""
    command = repositories.queue_maintenance(
        db, ctx.box, actor, job_id, body.kind, ctx.settings.command_ttl_s
    )
    return CommandOut.model_validate(command)
