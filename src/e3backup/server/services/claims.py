"""next_run: hand an agent exactly one run.

First its own in-progress run gone silent (heartbeat older than the reclaim grace, younger than
the watchdog cutoff: the agent restarted), then the oldest queued backup run bound to it. Both
claims are conditional UPDATEs, so of many concurrent callers exactly one wins a run, on SQLite
and on PostgreSQL alike. Restore runs travel as commands and are never handed out here.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from e3backup.server.crypto import SecretBox
from e3backup.server.db.base import utcnow
from e3backup.server.db.models import Agent, Job, Run
from e3backup.server.db.models.jobs import VM_ENGINES
from e3backup.server.services import backup_points, jobs, vms

_CANDIDATES = 5


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


def _reclaim(db: Session, agent: Agent, grace_s: float, watchdog_s: float) -> Run | None:
    now = utcnow()
    grace_cutoff = now - timedelta(seconds=grace_s)
    watchdog_cutoff = now - timedelta(seconds=watchdog_s)
    candidates = db.scalars(
        select(Run.id)
        .where(
            Run.agent_id == agent.id,
            Run.status.in_(("starting", "running")),
            Run.run_type == "backup",
            Run.heartbeat_at < grace_cutoff,
            Run.heartbeat_at > watchdog_cutoff,
        )
        .order_by(Run.id)
        .limit(_CANDIDATES)
    ).all()
    for run_id in candidates:
        claimed = db.execute(
            update(Run)
            .where(
                Run.id == run_id,
                Run.status.in_(("starting", "running")),
                Run.heartbeat_at < grace_cutoff,
            )
            .values(heartbeat_at=now)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(claimed) == 1:
            return db.get_one(Run, run_id, populate_existing=True)
    return None


def _claim_queued(db: Session, agent: Agent) -> Run | None:
    candidates = db.scalars(
        select(Run.id)
        .where(Run.agent_id == agent.id, Run.status == "queued", Run.run_type == "backup")
        .order_by(Run.id)
        .limit(_CANDIDATES)
    ).all()
    for run_id in candidates:
        now = utcnow()
        claimed = db.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == "queued")
            .values(status="starting", claimed_at=now, heartbeat_at=now)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(claimed) == 1:
            return db.get_one(Run, run_id, populate_existing=True)
    return None


def _vm_entries(db: Session, agent: Agent, job: Job) -> list[dict[str, Any]]:
    """The job's chosen VMs with their registry ids and the last change tokens per disk."""
    known = vms.agent_vms(db, agent.id)
    by_ref = {vm.vm_uuid: vm for vm in known} | {vm.name: vm for vm in known}
    by_ref |= {str(vm.id): vm for vm in known}
    latest = backup_points.latest_points_by_source(db, job.id)
    entries = []
    for ref in job.vms_json or []:
        vm = by_ref.get(str(ref))
        point = latest.get(vm.vm_uuid) if vm else None
        entries.append(
            {
                "vm_ref": str(ref),
                "vm_id": vm.id if vm else None,
                "vm_name": vm.name if vm else str(ref),
                "vm_guid": vm.vm_uuid if vm else str(ref),
                "rct_ids": dict(point.change_tokens_json or {}) if point else {},
                "last_snapshot_id": point.snapshot_id if point else None,
                "last_backup_point_id": point.id if point else None,
            }
        )
    return entries


def run_payload(
    db: Session, box: SecretBox, agent: Agent, run: Run, reclaimed: bool
) -> dict[str, Any]:
    """The seed's NextRunResponse: run identity plus the job context (secrets decrypted)."""
    job = db.get_one(Job, run.job_id)
    payload = jobs.agent_job_context(box, job)
    payload.update(
        run_id=run.id,
        run_uuid=run.uuid,
        run_type=run.run_type,
        status=run.status,
        trigger=run.trigger,
        scheduled_for=run.scheduled_for.isoformat() if run.scheduled_for else None,
        reclaimed=reclaimed,
        cancel_requested=run.cancel_requested,
        vms=_vm_entries(db, agent, job) if job.engine in VM_ENGINES else [],
    )
    return payload


def next_run(
    db: Session, box: SecretBox, agent: Agent, grace_s: float, watchdog_s: float
) -> dict[str, Any] | None:
    run = _reclaim(db, agent, grace_s, watchdog_s)
    reclaimed = run is not None
    if run is None:
        run = _claim_queued(db, agent)
    if run is None:
        return None
    return run_payload(db, box, agent, run, reclaimed)
