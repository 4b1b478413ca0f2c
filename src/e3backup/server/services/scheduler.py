"""The scheduler tick: fire due schedule slots as queued runs, once, on any number of replicas.

Per due job (``enabled``, not deleted, ``next_run_at <= now``) one tick:

1. works out the one slot owed (`scheduling.due_slot`: the latest missed slot; a server that
   was down for a week queues one catch-up run, not a week of them);
2. advances the job with a conditional UPDATE (``WHERE next_run_at = <value read>``), so a
   second replica that read the same row changes nothing and backs off; PostgreSQL replicas
   also claim rows with ``FOR UPDATE SKIP LOCKED`` and never wait on each other;
3. queues a run for the slot — unless the job already has an active run (skipped, with a
   SCHEDULE_SKIPPED_ACTIVE_RUN event on that run, written once per run) or its agent is
   disabled or gone (skipped).
   UNIQUE(job_id, scheduled_for) and the one-active-backup index back this up in the database.

An offline agent (last seen longer ago than `agent_online_window_s`) still gets its run
queued: the seed's agents only ever claim existing queued runs, so the run waits and starts
when the agent returns (and the one-active-run rule keeps that to a single run). The run
carries a MISSED_SCHEDULE warning so the client sees the slot was not met on time.

Jobs whose schedule changed have ``next_run_at`` NULL (jobs service); the tick primes them
with the next slot after now, owing nothing for the past.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Select, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from e3backup.server import scheduling
from e3backup.server.db.base import utcnow
from e3backup.server.db.models import Agent, Job, Run
from e3backup.server.db.models.runs import ACTIVE_STATUSES
from e3backup.server.services import server_events

log = logging.getLogger(__name__)

BATCH_SIZE = 200


@dataclass
class TickReport:
    queued: list[int] = field(default_factory=list)  # run ids
    skipped_active: int = 0
    skipped_agent: int = 0
    missed_offline: int = 0
    primed: int = 0
    lost_race: int = 0


def schedule_of(job: Job) -> tuple[scheduling.Schedule, ZoneInfo]:
    """The job's parsed schedule and zone (both validated when the job was saved)."""
    return scheduling.parse_schedule(job.schedule_json), scheduling.parse_timezone(job.timezone)


def next_run_at_for(job: Job, now: datetime) -> datetime | None:
    """The first slot after `now` (what the jobs service may store when a schedule changes)."""
    try:
        schedule, tz = schedule_of(job)
    except scheduling.ScheduleError:
        return None
    return scheduling.next_slot_after(schedule, tz, now)


def _lock(db: Session, query: Select[Job]) -> Select[Job]:
    if db.get_bind().dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True, of=Job)
    return query


def _live_jobs() -> Select[Job]:
    return select(Job).where(Job.enabled.is_(True), Job.deleted_at.is_(None))


def prime_jobs(db: Session, now: datetime, report: TickReport) -> None:
    """Give jobs with a (new) schedule but no `next_run_at` their next slot."""
    kind = Job.schedule_json["type"].as_string()
    query = _live_jobs().where(Job.next_run_at.is_(None), kind.is_not(None), kind != "manual")
    for job in db.scalars(_lock(db, query.limit(BATCH_SIZE))):
        nxt = next_run_at_for(job, now)
        if nxt is None:
            continue
        moved = db.execute(
            update(Job)
            .where(Job.id == job.id, Job.next_run_at.is_(None))
            .values(next_run_at=nxt)
            .execution_options(synchronize_session=False)
        )
        report.primed += moved.rowcount  # type: ignore[attr-defined]


def fire_due_jobs(db: Session, now: datetime, online_window_s: float, report: TickReport) -> None:
    query = _live_jobs().where(Job.next_run_at <= now).order_by(Job.next_run_at)
    for job in db.scalars(_lock(db, query.limit(BATCH_SIZE))).all():
        _fire_job(db, job, now, online_window_s, report)


def _fire_job(
    db: Session, job: Job, now: datetime, online_window_s: float, report: TickReport
) -> None:
    read_next = job.next_run_at
    assert read_next is not None
    try:
        schedule, tz = schedule_of(job)
    except scheduling.ScheduleError as exc:
        log.warning("job %s has an invalid schedule, not scheduling it: %s", job.id, exc)
        slot, following = None, None
    else:
        # owed: the latest slot in [next_run_at, now] that was not fired before
        last = read_next - timedelta(microseconds=1)
        if job.last_slot_at is not None and job.last_slot_at > last:
            last = job.last_slot_at
        slot = scheduling.due_slot(schedule, tz, last, now)
        following = scheduling.next_slot_after(schedule, tz, now)
    values: dict[str, object] = {"next_run_at": following}
    if slot is not None:
        values["last_slot_at"] = slot
    claimed = db.execute(
        update(Job)
        .where(Job.id == job.id, Job.next_run_at == read_next)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        report.lost_race += 1  # another replica advanced this job first
        return
    if slot is not None:
        _queue_slot(db, job, slot, now, online_window_s, report)


def _queue_slot(
    db: Session,
    job: Job,
    slot: datetime,
    now: datetime,
    online_window_s: float,
    report: TickReport,
) -> None:
    agent = db.get(Agent, job.agent_id) if job.agent_id is not None else None
    if agent is None or agent.status != "enabled":
        report.skipped_agent += 1
        log.info("job %s: slot %s skipped, its agent is disabled or deleted", job.id, slot)
        return
    active = db.scalars(
        select(Run).where(
            Run.job_id == job.id, Run.run_type == "backup", Run.status.in_(ACTIVE_STATUSES)
        )
    ).first()
    if active is not None:
        report.skipped_active += 1
        server_events.record(
            db,
            active.id,
            "SCHEDULE_SKIPPED_ACTIVE_RUN",
            key="skipped-slot",  # once per active run, however many slots it outlasts
            params={
                "scheduled_for": slot.isoformat(),
                "active_run_id": active.id,
                "active_status": active.status,
            },
            level="warning",
            at=now,
        )
        return
    run = Run(
        uuid=str(uuid.uuid4()),
        tenant_id=job.tenant_id,
        job_id=job.id,
        agent_id=agent.id,
        run_type="backup",
        engine=job.engine,
        status="queued",
        trigger="schedule",
        scheduled_for=slot,
        created_at=now,
    )
    try:
        with db.begin_nested():
            db.add(run)
    except IntegrityError:  # this slot, or another active run, got there first
        report.skipped_active += 1
        return
    report.queued.append(run.id)
    if not _online(agent, now, online_window_s):
        report.missed_offline += 1
        server_events.record(
            db,
            run.id,
            "MISSED_SCHEDULE",
            key=f"missed:{slot.isoformat()}",
            params={
                "scheduled_for": slot.isoformat(),
                "last_seen": agent.last_seen_at.isoformat() if agent.last_seen_at else "never",
            },
            level="warning",
            at=now,
        )


def _online(agent: Agent, now: datetime, online_window_s: float) -> bool:
    return agent.last_seen_at is not None and agent.last_seen_at >= now - timedelta(
        seconds=online_window_s
    )


def tick(db: Session, online_window_s: float, now: datetime | None = None) -> TickReport:
    """One scheduler pass in the caller's transaction (the caller commits)."""
    now = now or utcnow()
    report = TickReport()
    prime_jobs(db, now, report)
    fire_due_jobs(db, now, online_window_s, report)
    if report.queued or report.lost_race:
        log.info(
            "scheduler: queued %d run(s), %d skipped (active run), %d lost to another replica",
            len(report.queued),
            report.skipped_active,
            report.lost_race,
        )
    return report
