"""Start a restore (seed 001 cloudbackup_hyperv_start_restore): a restore run for progress and a
queued command carrying the point's manifests; the job context is added at delivery."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from e3backup.server.crypto import SecretBox
from e3backup.server.db.models import Agent, BackupPoint, Command, Job, Run
from e3backup.server.db.models.jobs import VM_ENGINES
from e3backup.server.schemas.points import RestoreRequest
from e3backup.server.services import audit, backup_points, commands, runs
from e3backup.server.services.auth import Actor
from e3backup.server.services.errors import Invalid, NotFound


@dataclass(frozen=True)
class StartedRestore:
    run: Run
    command: Command
    point: BackupPoint
    disks: dict[str, object]


def _find_point(db: Session, actor: Actor, req: RestoreRequest) -> BackupPoint:
    if req.backup_point_id is not None:
        point = backup_points.get_point(db, actor, req.backup_point_id)
    elif req.snapshot_id and req.job_id is not None:
        point = db.scalar(
            select(BackupPoint).where(
                BackupPoint.job_id == req.job_id,
                BackupPoint.tenant_id.in_(actor.tenant_ids),
                (BackupPoint.snapshot_id == req.snapshot_id)
                | (BackupPoint.manifest_id == req.snapshot_id),
            )
        )
    else:
        raise Invalid("backup_point_id is required", "backup_point_id")
    if point is None:
        raise NotFound("Backup point not found")
    return point


def _target_agent(db: Session, actor: Actor, req: RestoreRequest, point: BackupPoint) -> Agent:
    agent_id = req.agent_id if req.agent_id is not None else point.agent_id
    agent = db.get(Agent, agent_id) if agent_id is not None else None
    if agent is None or not actor.sees(agent.tenant_id) or agent.tenant_id != point.tenant_id:
        raise Invalid("the agent for this restore was not found", "agent_id")
    return agent


def start_restore(db: Session, box: SecretBox, actor: Actor, req: RestoreRequest) -> StartedRestore:
    actor.require("operator")
    point = _find_point(db, actor, req)
    if not backup_points.is_restorable(point):
        raise Invalid("Restore chain is broken", "backup_point_id")
    if not req.target_path.strip():
        raise Invalid("target_path is required", "target_path")
    manifests = dict(point.disk_manifests_json or {})
    if req.disk_filter:
        manifests = {k: v for k, v in manifests.items() if k in set(req.disk_filter)}
        if not manifests:
            raise Invalid("No disks selected", "disk_filter")
    job = db.get(Job, point.job_id) if point.job_id is not None else None
    if job is None:
        raise NotFound("Backup point not found")
    agent = _target_agent(db, actor, req, point)
    run_type = "hyperv_restore" if point.engine in VM_ENGINES else "restore"
    params = {
        "backup_point_id": point.id,
        "snapshot_id": point.snapshot_id,
        "target_path": req.target_path,
        "disk_filter": list(req.disk_filter),
        "format": req.format,
    }
    run = runs.new_run(
        db,
        job,
        run_type=run_type,
        trigger="restore",
        user_id=actor.user_id,
        restore=params,
        agent_id=agent.id,
    )
    payload = {
        **params,
        "manifest_id": point.manifest_id,
        "vm_name": point.source_name if point.vm_id is not None else None,
        "vm_guid": point.source_key if point.vm_id is not None else None,
        "source": point.source_key,
        "disk_manifests": manifests,
        "restore_chain": [
            {
                "backup_point_id": point.id,
                "manifest_id": point.manifest_id,
                "backup_type": point.backup_type,
                "disk_manifests": manifests,
            }
        ],
        "backup_type": point.backup_type,
        "restore_run_id": run.id,
        "restore_run_uuid": run.uuid,
    }
    command = commands.enqueue(
        db,
        box,
        agent=agent,
        type=run_type,
        payload=payload,
        job_id=job.id,
        run_id=run.id,
        user_id=actor.user_id,
    )
    audit.record(
        db,
        actor,
        "restore.start",
        "run",
        run.id,
        run.tenant_id,
        {"backup_point_id": point.id, "target_path": req.target_path},
    )
    return StartedRestore(run, command, point, manifests)
