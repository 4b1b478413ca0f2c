"""Three live `e3backup server` processes on one PostgreSQL: every due slot fires exactly once."""

from __future__ import annotations

import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, update

from e3backup.server.db.base import utcnow
from e3backup.server.db.engine import session_scope
from e3backup.server.db.models import Job, Run
from fixtures.server_db import make_job, make_tenant_agent, migrated_factory
from fixtures.server_process import running_server

JOBS = 40
FAST_TICKS = {"scheduler_tick_s": "0.05", "watchdog_tick_s": "0.5"}


def test_schedule_fires_exactly_once_across_three_servers(pg_url: str, tmp_path: Path) -> None:
    engine, factory = migrated_factory(pg_url)
    now = utcnow()
    with session_scope(factory) as db:
        _, agent = make_tenant_agent(db, last_seen_at=now)
        later = now + timedelta(days=1)  # not due while the servers start
        job_ids = [make_job(db, agent, name=f"job-{i}", next_run_at=later).id for i in range(JOBS)]
    with ExitStack() as stack:
        servers = [
            stack.enter_context(running_server(tmp_path / f"s{i}", pg_url, settings=FAST_TICKS))
            for i in range(3)
        ]
        assert len({s.pid for s in servers}) == 3
        due = utcnow().replace(minute=0, second=0, microsecond=0)  # this hour's slot
        with session_scope(factory) as db:  # every job becomes due at once, for all three
            db.execute(update(Job).where(Job.id.in_(job_ids)).values(next_run_at=due))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with session_scope(factory) as db:
                pending = db.scalar(
                    select(func.count()).select_from(Job).where(Job.next_run_at <= due)
                )
            if pending == 0:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # ~20 more ticks per server: nothing may fire twice
        logs = "".join(s.log.read_text() for s in servers)
    with session_scope(factory) as db:
        per_job = dict(
            db.execute(
                select(Run.job_id, func.count()).where(Run.job_id.in_(job_ids)).group_by(Run.job_id)
            ).all()
        )
        slots = set(db.scalars(select(Run.scheduled_for).where(Run.job_id.in_(job_ids))))
    engine.dispose()
    assert per_job == {job_id: 1 for job_id in job_ids}, logs[-3000:]
    assert slots == {due}
    assert "Traceback" not in logs
