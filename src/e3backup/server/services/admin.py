"""The admin view's reads (seed 002 "UI/UX (admin)"): jobs and runs of every tenant the admin
sees (an MSP's own and its children's, whatever tenant the session switched to), with engine,
destination and agent, the newest run and maintenance command of each job."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from e3backup.server.db.models import Agent, Command, Job, Run, Tenant, User
from e3backup.server.services import auth, repositories, runs
from e3backup.server.services.auth import Actor

MAX_JOBS_SHOWN = 500


@dataclass(frozen=True)
class AdminFilter:
    tenant_id: int | None = None
    engine: str | None = None
    status: str | None = None  # a run status (runs table only)


@dataclass(frozen=True)
class JobRow:
    job: Job
    tenant: str
    agent: str
    destination: str
    last_run: Run | None
    maintenance: Command | None  # the newest maintenance command of the job


@dataclass(frozen=True)
class RunRow:
    run: Run
    job_name: str
    tenant: str
    agent: str
    destination: str


def admin_scope(db: Session, actor: Actor, tenant_id: int | None = None) -> Actor:
    """The admin's whole view (not narrowed by the tenant switcher), or one visible tenant of
    it. Refuses anyone below admin."""
    actor.require("admin")
    user = db.get(User, actor.user_id) if actor.user_id is not None else None
    full = auth.actor_for_user(db, user, actor.kind) if user is not None else actor
    if tenant_id is not None and full.sees(tenant_id):
        return replace(full, tenant_ids=frozenset({tenant_id}))
    return full


def tenant_names(db: Session, scope: Actor) -> dict[int, str]:
    rows = db.execute(select(Tenant.id, Tenant.name).where(Tenant.id.in_(scope.tenant_ids)))
    return {tid: name for tid, name in rows.all()}


def _agent_names(db: Session, scope: Actor) -> dict[int, str]:
    rows = db.execute(
        select(Agent.id, Agent.hostname).where(Agent.tenant_id.in_(scope.tenant_ids))
    ).all()
    return {aid: hostname or f"agent {aid}" for aid, hostname in rows}


def _newest_by_job(db: Session, model: Any, job_ids: list[int], *where: Any) -> dict[int, Any]:
    """The newest row (highest id) of `model` per job, in one query."""
    if not job_ids:
        return {}
    newest = (
        select(func.max(model.id))
        .where(model.job_id.in_(job_ids), *where)
        .group_by(model.job_id)
        .scalar_subquery()
    )
    return {row.job_id: row for row in db.scalars(select(model).where(model.id.in_(newest)))}


def job_rows(db: Session, scope: Actor, flt: AdminFilter) -> list[JobRow]:
    where: list[Any] = [Job.tenant_id.in_(scope.tenant_ids), Job.deleted_at.is_(None)]
    if flt.engine:
        where.append(Job.engine == flt.engine)
    found = list(db.scalars(select(Job).where(*where).order_by(Job.id).limit(MAX_JOBS_SHOWN)))
    ids = [j.id for j in found]
    last_runs = _newest_by_job(db, Run, ids, Run.run_type == "backup")
    maintenance = _newest_by_job(db, Command, ids, Command.type.in_(repositories.MAINTENANCE_TYPES))
    names, agents = tenant_names(db, scope), _agent_names(db, scope)
    return [
        JobRow(
            job=job,
            tenant=names.get(job.tenant_id, ""),
            agent=agents.get(job.agent_id, "") if job.agent_id is not None else "",
            destination=repositories.destination_label(job),
            last_run=last_runs.get(job.id),
            maintenance=maintenance.get(job.id),
        )
        for job in found
    ]


def run_rows(
    db: Session, scope: Actor, flt: AdminFilter, limit: int, offset: int
) -> tuple[list[RunRow], int]:
    found, total = runs.list_runs(
        db, scope, runs.RunFilter(status=flt.status, engine=flt.engine), limit, offset
    )
    job_ids = {r.job_id for r in found if r.job_id is not None}
    by_id = {j.id: j for j in db.scalars(select(Job).where(Job.id.in_(job_ids)))}
    names, agents = tenant_names(db, scope), _agent_names(db, scope)
    rows = []
    for run in found:
        job = by_id.get(run.job_id) if run.job_id is not None else None
        rows.append(
            RunRow(
                run=run,
                job_name=job.name if job else "",
                tenant=names.get(run.tenant_id, ""),
                agent=agents.get(run.agent_id, "") if run.agent_id is not None else "",
                destination=repositories.destination_label(job) if job else "",
            )
        )
    return rows, total
