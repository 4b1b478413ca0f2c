"""The dashboard's reads, tenant-scoped: agents online/offline, runs by status, what needs
attention, the next scheduled runs, and storage per repository as agents reported it after
runs and maintenance (the server never opens a repository)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from e3backup.server import scheduling
from e3backup.server.db.models import Agent, Job, Run, RunEvent
from e3backup.server.services import repositories
from e3backup.server.services.agents import is_online
from e3backup.server.services.auth import Actor
from e3backup.server.services.scheduler import schedule_of

ATTENTION_STATUSES = ("failed", "partial_success", "warning")
RepositoryUsage = repositories.Repository


@dataclass(frozen=True)
class AgentCounts:
    online: int
    offline: int
    disabled: int


@dataclass(frozen=True)
class Attention:
    kind: str  # run_failed | run_partial | missed_schedule | no_recent_success | agent_offline
    title: str
    detail: str
    link: str
    at: datetime | None


def _visible_agents(db: Session, actor: Actor) -> list[Agent]:
    return list(db.scalars(select(Agent).where(Agent.tenant_id.in_(actor.tenant_ids))))


def _live_jobs(db: Session, actor: Actor) -> list[Job]:
    where = [Job.tenant_id.in_(actor.tenant_ids), Job.deleted_at.is_(None)]
    return list(db.scalars(select(Job).where(*where).order_by(Job.id)))


def agent_counts(db: Session, actor: Actor, online_window_s: float) -> AgentCounts:
    rows = _visible_agents(db, actor)
    disabled = sum(1 for a in rows if a.status != "enabled")
    online = sum(1 for a in rows if is_online(a, online_window_s))
    return AgentCounts(online=online, offline=len(rows) - disabled - online, disabled=disabled)


def run_counts_since(db: Session, actor: Actor, since: datetime) -> dict[str, int]:
    """Runs created since `since`, counted by status."""
    rows = db.execute(
        select(Run.status, func.count())
        .where(Run.tenant_id.in_(actor.tenant_ids), Run.created_at >= since)
        .group_by(Run.status)
    ).all()
    return dict(Counter({status: count for status, count in rows}))


def next_scheduled(db: Session, actor: Actor, limit: int = 8) -> list[Job]:
    query = (
        select(Job)
        .where(
            Job.tenant_id.in_(actor.tenant_ids),
            Job.deleted_at.is_(None),
            Job.enabled.is_(True),
            Job.next_run_at.is_not(None),
        )
        .order_by(Job.next_run_at)
        .limit(limit)
    )
    return list(db.scalars(query))


def _failed_runs(db: Session, actor: Actor, since: datetime) -> list[Attention]:
    query = (
        select(Run, Job.name)
        .outerjoin(Job, Job.id == Run.job_id)
        .where(
            Run.tenant_id.in_(actor.tenant_ids),
            Run.created_at >= since,
            Run.status.in_(ATTENTION_STATUSES),
        )
        .order_by(Run.id.desc())
        .limit(20)
    )
    items = []
    for run, job_name in db.execute(query).all():
        failed = run.status == "failed"
        items.append(
            Attention(
                kind="run_failed" if failed else "run_partial",
                title=f"{job_name or run.run_type} {'failed' if failed else 'had problems'}",
                detail=run.error or run.status.replace("_", " "),
                link=f"/runs/{run.id}",
                at=run.finished_at or run.created_at,
            )
        )
    return items


def _missed_schedules(db: Session, actor: Actor, since: datetime) -> list[Attention]:
    query = (
        select(RunEvent, Run.id, Job.name)
        .join(Run, Run.id == RunEvent.run_id)
        .outerjoin(Job, Job.id == Run.job_id)
        .where(
            Run.tenant_id.in_(actor.tenant_ids),
            RunEvent.message_id == "MISSED_SCHEDULE",
            RunEvent.ts >= since,
        )
        .order_by(RunEvent.id.desc())
        .limit(20)
    )
    return [
        Attention(
            kind="missed_schedule",
            title=f"{job_name or 'A job'} missed its schedule",
            detail="its agent was offline at the scheduled time",
            link=f"/runs/{run_id}",
            at=event.ts,
        )
        for event, run_id, job_name in db.execute(query).all()
    ]


def _interval(job: Job, now: datetime) -> timedelta | None:
    """The gap between the job's next two slots; None for manual or invalid schedules."""
    try:
        schedule, tz = schedule_of(job)
    except scheduling.ScheduleError:
        return None
    first = scheduling.next_slot_after(schedule, tz, now)
    second = scheduling.next_slot_after(schedule, tz, first) if first else None
    return second - first if first and second else None


def _stale_jobs(db: Session, jobs: list[Job], now: datetime) -> list[Attention]:
    """Scheduled jobs whose last success is older than two intervals (or that never had one
    while existing that long)."""
    if not jobs:
        return []
    last_success = dict(
        db.execute(
            select(Run.job_id, func.max(Run.finished_at))
            .where(Run.job_id.in_([j.id for j in jobs]), Run.status == "success")
            .group_by(Run.job_id)
        ).all()
    )
    items = []
    for job in jobs:
        interval = _interval(job, now) if job.enabled else None
        if interval is None:
            continue
        last = last_success.get(job.id)
        if (last or job.created_at) >= now - 2 * interval:
            continue
        items.append(
            Attention(
                kind="no_recent_success",
                title=f"{job.name} has no recent successful backup",
                detail="no success in more than two schedule intervals",
                link=f"/jobs/{job.id}",
                at=last,
            )
        )
    return items


def _offline_agents(agents: list[Agent], online_window_s: float) -> list[Attention]:
    return [
        Attention(
            kind="agent_offline",
            title=f"Agent {a.hostname or a.id} is offline",
            detail="it has not contacted the server recently",
            link="/agents",
            at=a.last_seen_at,
        )
        for a in agents
        if a.status == "enabled" and not is_online(a, online_window_s)
    ]


def needs_attention(
    db: Session, actor: Actor, now: datetime, online_window_s: float
) -> list[Attention]:
    since = now - timedelta(hours=24)
    return [
        *_failed_runs(db, actor, since),
        *_missed_schedules(db, actor, since),
        *_stale_jobs(db, _live_jobs(db, actor), now),
        *_offline_agents(_visible_agents(db, actor), online_window_s),
    ]


def repository_usage(db: Session, actor: Actor) -> list[RepositoryUsage]:
    """One row per repository (a job destination), with its newest reported statistics."""
    return repositories.list_repositories(db, actor)
