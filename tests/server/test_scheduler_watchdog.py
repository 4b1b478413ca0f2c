"""Scheduler and watchdog ticks on SQLite and on a real PostgreSQL, time driven through `now`."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from e3backup.server.db.engine import session_scope
from e3backup.server.db.models import Command, Job, Run, RunEvent
from e3backup.server.services import scheduler, watchdog
from fixtures.server_db import db_factory, make_job, make_run, make_tenant_agent, utc

__all__ = ["db_factory"]

ONLINE_S = 90.0
T0 = utc(2024, 5, 1, 10, 0)


def runs_of(db: Session, job_id: int) -> list[Run]:
    return list(db.scalars(select(Run).where(Run.job_id == job_id).order_by(Run.id)))


def events_of(db: Session, run_id: int) -> list[str]:
    return list(
        db.scalars(
            select(RunEvent.message_id).where(RunEvent.run_id == run_id).order_by(RunEvent.id)
        )
    )


def test_new_schedule_is_primed_without_firing(db_factory: sessionmaker[Session]) -> None:
    with session_scope(db_factory) as db:
        _, agent = make_tenant_agent(db, last_seen_at=T0)
        job_id = make_job(db, agent, schedule_json={"type": "hourly", "minute": 30}).id
        manual_id = make_job(db, agent, schedule_json={"type": "manual"}).id
    with session_scope(db_factory) as db:
        report = scheduler.tick(db, ONLINE_S, now=T0)
    assert report.primed == 1 and report.queued == []
    with session_scope(db_factory) as db:
        assert db.get(Job, job_id).next_run_at == utc(2024, 5, 1, 10, 30)  # type: ignore[union-attr]
        assert db.get(Job, manual_id).next_run_at is None  # type: ignore[union-attr]


def test_slot_fires_once_and_advances(db_factory: sessionmaker[Session]) -> None:
    with session_scope(db_factory) as db:
        _, agent = make_tenant_agent(db, last_seen_at=T0)
        job_id = make_job(db, agent, next_run_at=utc(2024, 5, 1, 10, 0)).id
    with session_scope(db_factory) as db:
        first = scheduler.tick(db, ONLINE_S, now=T0 + timedelta(seconds=5))
    with session_scope(db_factory) as db:
        again = scheduler.tick(db, ONLINE_S, now=T0 + timedelta(seconds=20))
    assert len(first.queued) == 1 and again.queued == []
    with session_scope(db_factory) as db:
        [run] = runs_of(db, job_id)
        assert (run.status, run.trigger, run.scheduled_for) == ("queued", "schedule", T0)
        job = db.get(Job, job_id)
        assert job is not None
        assert (job.last_slot_at, job.next_run_at) == (T0, utc(2024, 5, 1, 11, 0))
        assert events_of(db, run.id) == []  # the agent is online: nothing missed


def test_downtime_gives_one_catch_up_run(db_factory: sessionmaker[Session]) -> None:
    """Down from 10:00 to 15:20: one run for the 15:00 slot, not five."""
    with session_scope(db_factory) as db:
        _, agent = make_tenant_agent(db, last_seen_at=utc(2024, 5, 1, 15, 20))
        job_id = make_job(db, agent, next_run_at=T0).id
    with session_scope(db_factory) as db:
        report = scheduler.tick(db, ONLINE_S, now=utc(2024, 5, 1, 15, 20))
    assert len(report.queued) == 1
    with session_scope(db_factory) as db:
        [run] = runs_of(db, job_id)
        assert run.scheduled_for == utc(2024, 5, 1, 15, 0)
        assert db.get(Job, job_id).next_run_at == utc(2024, 5, 1, 16, 0)  # type: ignore[union-attr]


def test_active_run_means_skip_with_one_event(db_factory: sessionmaker[Session]) -> None:
    with session_scope(db_factory) as db:
        _, agent = make_tenant_agent(db, last_seen_at=T0)
        job = make_job(db, agent, next_run_at=T0)
        job_id, active_id = job.id, make_run(db, job, status="running").id
    for hour in (0, 1, 2):  # three slots pass while the run is still going
        now = T0 + timedelta(hours=hour, seconds=1)
        with session_scope(db_factory) as db:
            report = scheduler.tick(db, ONLINE_S, now=now)
        assert report.queued == [] and report.skipped_active == 1
    with session_scope(db_factory) as db:
        assert [r.id for r in runs_of(db, job_id)] == [active_id]
        assert events_of(db, active_id) == ["SCHEDULE_SKIPPED_ACTIVE_RUN"]  # not one per slot


def test_offline_agent_queues_with_missed_schedule(db_factory: sessionmaker[Session]) -> None:
    with session_scope(db_factory) as db:
        _, agent = make_tenant_agent(db, last_seen_at=T0 - timedelta(hours=3))
        job_id = make_job(db, agent, next_run_at=T0).id
        _, gone_agent = make_tenant_agent(db, last_seen_at=T0, name="gone")
        gone_agent.status = "disabled"
        disabled_job_id = make_job(db, gone_agent, next_run_at=T0).id
    with session_scope(db_factory) as db:
        report = scheduler.tick(db, ONLINE_S, now=T0 + timedelta(seconds=1))
    assert report.missed_offline == 1 and report.skipped_agent == 1
    with session_scope(db_factory) as db:
        [run] = runs_of(db, job_id)
        assert run.status == "queued"
        assert events_of(db, run.id) == ["MISSED_SCHEDULE"]
        assert runs_of(db, disabled_job_id) == []
        assert db.get(Job, disabled_job_id).next_run_at == utc(2024, 5, 1, 11, 0)  # type: ignore[union-attr]


def test_a_replica_that_read_the_same_job_backs_off(db_factory: sessionmaker[Session]) -> None:
    """Two ticks that both saw the due job: only the first queues (conditional UPDATE)."""
    with session_scope(db_factory) as db:
        _, agent = make_tenant_agent(db, last_seen_at=T0)
        job_id = make_job(db, agent, next_run_at=T0).id
    with session_scope(db_factory) as db:
        stale = db.get(Job, job_id)
        assert stale is not None
        db.expunge(stale)
    now = T0 + timedelta(seconds=1)
    with session_scope(db_factory) as db:
        scheduler.tick(db, ONLINE_S, now=now)
    with session_scope(db_factory) as db:
        report = scheduler.TickReport()
        scheduler._fire_job(db, stale, now, ONLINE_S, report)
    assert report.lost_race == 1 and report.queued == []
    with session_scope(db_factory) as db:
        assert len(runs_of(db, job_id)) == 1


def test_watchdog_fails_silent_runs_only(db_factory: sessionmaker[Session]) -> None:
    with session_scope(db_factory) as db:
        _, agent = make_tenant_agent(db, last_seen_at=T0)
        job = make_job(db, agent)
        silent = make_run(db, job, status="running", heartbeat_at=T0 - timedelta(seconds=800))
        fresh = make_run(db, job, run_type="restore", status="running", heartbeat_at=T0)
        never = make_run(
            db, job, run_type="restore", status="starting", claimed_at=T0 - timedelta(hours=1)
        )
        done = make_run(db, job, run_type="restore", status="success", heartbeat_at=utc(2024, 1, 1))
        ids = silent.id, fresh.id, never.id, done.id
    with session_scope(db_factory) as db:
        report = watchdog.tick(db, 720, 900, now=T0)
    with session_scope(db_factory) as db:
        report_again = watchdog.tick(db, 720, 900, now=T0 + timedelta(seconds=30))
    assert sorted(report.failed_offline) == sorted([ids[0], ids[2]])
    assert report_again.failed_offline == []
    with session_scope(db_factory) as db:
        statuses = [db.get(Run, i).status for i in ids]  # type: ignore[union-attr]
        assert statuses == ["failed", "running", "failed", "success"]
        failed = db.get(Run, ids[0])
        assert failed is not None and failed.error_code == "AGENT_OFFLINE"
        assert failed.finished_at == T0
        assert events_of(db, ids[0]) == ["AGENT_OFFLINE"]


def test_watchdog_closes_unconfirmed_cancel_as_cancelled(db_factory: sessionmaker[Session]) -> None:
    with session_scope(db_factory) as db:
        _, agent = make_tenant_agent(db, last_seen_at=T0)
        job = make_job(db, agent)
        # cancelled 20 min ago, and silent as well: ends cancelled, not failed
        overdue = make_run(
            db,
            job,
            status="running",
            heartbeat_at=T0 - timedelta(seconds=1000),
            cancel_requested=True,
            cancel_requested_at=T0 - timedelta(minutes=20),
        )
        recent = make_run(
            db,
            job,
            run_type="restore",
            status="running",
            heartbeat_at=T0,
            cancel_requested=True,
            cancel_requested_at=T0 - timedelta(minutes=1),
        )
        ids = overdue.id, recent.id
    with session_scope(db_factory) as db:
        report = watchdog.tick(db, 720, 900, now=T0)
    assert report.cancelled_timeout == [ids[0]] and report.failed_offline == []
    with session_scope(db_factory) as db:
        assert db.get(Run, ids[0]).status == "cancelled"  # type: ignore[union-attr]
        assert db.get(Run, ids[1]).status == "running"  # type: ignore[union-attr]
        assert events_of(db, ids[0]) == ["CANCEL_TIMEOUT"]


def test_watchdog_expires_commands_and_their_waiting_restore(
    db_factory: sessionmaker[Session],
) -> None:
    with session_scope(db_factory) as db:
        tenant, agent = make_tenant_agent(db, last_seen_at=T0)
        job = make_job(db, agent)
        restore = make_run(db, job, run_type="restore", status="queued", trigger="restore")

        def command(kind: str, status: str, expires_in_s: float, run_id: int | None) -> int:
            row = Command(
                tenant_id=tenant.id,
                agent_id=agent.id,
                run_id=run_id,
                type=kind,
                status=status,
                expires_at=T0 + timedelta(seconds=expires_in_s),
            )
            db.add(row)
            db.flush()
            return row.id

        expired_restore = command("restore", "pending", -1, restore.id)
        expired_browse = command("browse_directory", "delivered", -60, None)
        live = command("list_vms", "pending", 60, None)
        finished = command("list_vms", "completed", -60, None)
        restore_id = restore.id
    with session_scope(db_factory) as db:
        report = watchdog.tick(db, 720, 900, now=T0)
    assert sorted(report.expired_commands) == sorted([expired_restore, expired_browse])
    assert report.failed_restores == [restore_id]
    with session_scope(db_factory) as db:
        statuses = {
            cid: db.get(Command, cid).status  # type: ignore[union-attr]
            for cid in (expired_restore, expired_browse, live, finished)
        }
        assert statuses == {
            expired_restore: "expired",
            expired_browse: "expired",
            live: "pending",
            finished: "completed",
        }
        assert db.get(Run, restore_id).status == "failed"  # type: ignore[union-attr]
        assert events_of(db, restore_id) == ["COMMAND_EXPIRED"]
        assert db.scalar(select(func.count()).select_from(RunEvent)) == 1
