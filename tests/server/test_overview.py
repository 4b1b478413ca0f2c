"""The dashboard's reads (services/overview.py) on SQLite and PostgreSQL: counts, what needs
attention (failed, missed schedule, no success for two intervals, offline agent), storage per
repository from the newest report of runs and maintenance commands; another tenant never shows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from e3backup.server.db.base import utcnow
from e3backup.server.db.engine import session_scope
from e3backup.server.db.models import Agent, Command, RunEvent
from e3backup.server.services import overview
from e3backup.server.services.auth import Actor
from fixtures.server_db import db_factory, make_job, make_run, make_tenant_agent

__all__ = ["db_factory"]

ONLINE_S = 90.0
NOW = utcnow()
H = timedelta(hours=1)


@pytest.fixture(autouse=True)
def _now_at_test_time() -> None:
    """NOW is taken when the test runs, not at import: collection can come many minutes
    earlier (xdist), and "online" means seen within the last 90 s."""
    global NOW
    NOW = utcnow()


def _actor(tenant_id: int) -> Actor:
    return Actor("user", None, tenant_id, frozenset({tenant_id}), "viewer", "t@x.test")


def _world(db: Session) -> int:
    tenant, agent = make_tenant_agent(db, last_seen_at=NOW)
    for hostname, seen, status in (("off", NOW - H, "enabled"), ("dis", NOW, "disabled")):
        db.add(Agent(tenant_id=tenant.id, hostname=hostname, token_hash=hostname * 8,
                     last_seen_at=seen, status=status))  # fmt: skip
    stale = make_job(db, agent, name="stale", created_at=NOW - 5 * H)
    fresh = make_job(db, agent, name="fresh", created_at=NOW - 5 * H)
    make_job(db, agent, name="new", created_at=NOW - H / 2, dest_local_path="/srv/other")
    make_job(db, agent, name="manual", schedule_json={"type": "manual"}, created_at=NOW - 9 * H)
    stats = {"size_bytes": 100, "logical_bytes": 300, "snapshot_count": 2, "dedup_ratio": 3.0}
    make_run(db, stale, status="success", created_at=NOW - 3 * H, finished_at=NOW - 3 * H,
             stats_json=stats)  # fmt: skip
    make_run(db, fresh, status="success", created_at=NOW - H / 2, finished_at=NOW - H / 2)
    make_run(db, fresh, status="failed", created_at=NOW - H, error="disk vanished")
    make_run(db, fresh, status="failed", created_at=NOW - 30 * H)  # older than 24 h
    missed = make_run(db, fresh, status="queued", created_at=NOW - 2 * H, trigger="schedule")
    db.add(RunEvent(run_id=missed.id, event_id="m1", ts=NOW - 2 * H, message_id="MISSED_SCHEDULE"))
    db.add(Command(tenant_id=tenant.id, agent_id=agent.id, job_id=stale.id,
                   type="maintenance_full", status="completed", completed_at=NOW - H,
                   result_json={"repository_stats": {"size_bytes": 80, "logical_bytes": 300}},
                   expires_at=NOW + H))  # fmt: skip
    _other, other_agent = make_tenant_agent(db, last_seen_at=NOW - H, name="other")
    make_run(db, make_job(db, other_agent, name="theirs"), status="failed", created_at=NOW)
    return tenant.id


def test_dashboard_reads(db_factory: sessionmaker[Session]) -> None:
    with session_scope(db_factory) as db:
        actor = _actor(_world(db))
    with session_scope(db_factory) as db:
        counts = overview.agent_counts(db, actor, ONLINE_S)
        assert (counts.online, counts.offline, counts.disabled) == (1, 1, 1)
        by_status = overview.run_counts_since(db, actor, NOW - 24 * H)
        assert by_status == {"success": 2, "failed": 1, "queued": 1}

        attention = overview.needs_attention(db, actor, NOW, ONLINE_S)
        kinds = sorted((a.kind, a.title) for a in attention)
        assert kinds == [
            ("agent_offline", "Agent off is offline"),
            ("missed_schedule", "fresh missed its schedule"),
            ("no_recent_success", "stale has no recent successful backup"),
            ("run_failed", "fresh failed"),
        ]

        usage = {u.repository: u for u in overview.repository_usage(db, actor)}
        assert set(usage) == {"/srv/repo", "/srv/other"}
        shared = usage["/srv/repo"]
        assert sorted(shared.job_names) == ["fresh", "manual", "stale"]
        assert (shared.size_bytes, shared.logical_bytes, shared.savings_bytes) == (80, 300, 220)
        assert shared.reported_at == NOW - H  # the maintenance report, newer than the run's
        assert usage["/srv/other"].size_bytes is None
