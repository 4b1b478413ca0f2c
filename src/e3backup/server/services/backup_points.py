"""Backup points: recorded when a backup run ends (one per VM for kvm/hyperv from its
vm_results, one per source for disk_image/files), listed in the seed 001 shape.

A point is recorded for each result that saved a snapshot (snapshot id present, no error, not
failed or cancelled), whatever the run's own status: a VM job cancelled (or failed) after some
VMs finished keeps their points (seed 002 "some VMs completed before cancel"), and a VM that
was cancelled or failed never gets one.

Every point is complete (the repository has no chained incrementals), so its restore chain is
the point itself.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from e3backup.server.db.models import BackupPoint, Job, Run, Vm
from e3backup.server.db.models.jobs import VM_ENGINES
from e3backup.server.schemas.points import BackupPointOut
from e3backup.server.schemas.runs import RunUpdate
from e3backup.server.services.auth import Actor

FAILED_RESULT_STATUSES = ("failed", "cancelled")


def saved_snapshot(result: object) -> bool:
    """A per-VM or per-source result whose snapshot is in the repository."""
    if not isinstance(result, dict) or result.get("error"):
        return False
    if result.get("status") in FAILED_RESULT_STATUSES:
        return False
    return bool(result.get("snapshot_id") or result.get("manifest_id"))


def _vm_for_result(db: Session, run: Run, result: dict[str, Any]) -> Vm:
    """The registry VM a result names (by hypervisor id, else name); added when unknown."""
    vm_uuid = str(result.get("vm_guid") or result.get("vm_id") or result.get("vm_name") or "")
    name = str(result.get("vm_name") or vm_uuid)
    assert run.agent_id is not None
    vm = db.scalar(select(Vm).where(Vm.agent_id == run.agent_id, Vm.vm_uuid == vm_uuid))
    if vm is None:
        vm = db.scalar(select(Vm).where(Vm.agent_id == run.agent_id, Vm.name == name))
    if vm is None:
        hypervisor = "hyperv" if run.engine == "hyperv" else "kvm"
        vm = Vm(
            tenant_id=run.tenant_id,
            agent_id=run.agent_id,
            vm_uuid=vm_uuid,
            name=name,
            hypervisor=hypervisor,
        )
        db.add(vm)
        db.flush()
    return vm


def _previous_point(db: Session, run: Run, source_key: str) -> int | None:
    return db.scalar(
        select(BackupPoint.id)
        .where(BackupPoint.job_id == run.job_id, BackupPoint.source_key == source_key)
        .order_by(BackupPoint.id.desc())
        .limit(1)
    )


def _point(db: Session, run: Run, source_key: str, result: dict[str, Any]) -> BackupPoint:
    snapshot_id = str(result.get("snapshot_id") or result.get("manifest_id") or "")
    disk_manifests = result.get("disk_manifests") or {}
    warnings = list(result.get("warnings") or [])
    backup_type = str(result.get("backup_type") or "Full")
    return BackupPoint(
        tenant_id=run.tenant_id,
        job_id=run.job_id,
        run_id=run.id,
        agent_id=run.agent_id,
        engine=run.engine,
        source_key=source_key[:1000],
        source_name=str(result.get("vm_name") or result.get("source") or source_key)[:1000],
        backup_type=backup_type[:20],
        snapshot_id=snapshot_id[:200],
        manifest_id=str(result.get("manifest_id") or snapshot_id)[:200],
        parent_backup_id=_previous_point(db, run, source_key)
        if backup_type.lower() == "incremental"
        else None,
        disk_manifests_json=disk_manifests if isinstance(disk_manifests, dict) else {},
        change_tokens_json=result.get("rct_ids") or result.get("change_tokens") or {},
        disk_count=len(disk_manifests) if isinstance(disk_manifests, dict) else 0,
        total_size_bytes=_int(result.get("total_bytes")),
        changed_size_bytes=_int(result.get("changed_bytes")),
        duration_seconds=_float(result.get("duration_seconds")),
        consistency_level=_str(result.get("consistency_level")),
        has_warnings=bool(warnings),
        warnings_json=warnings,
        warning_code=_str(result.get("warning_code")),
    )


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return str(value)[:100] if value else None


def _job_source(job: Job | None) -> str:
    if job is None:
        return ""
    return job.disk_source_volume or job.source_path or ",".join(job.source_paths_json or [])


def record_for_run(db: Session, run: Run, update: RunUpdate) -> list[BackupPoint]:
    """Points for a backup run that just ended: one per result that saved a snapshot."""
    if run.run_type != "backup":
        return []
    points: list[BackupPoint] = []
    if run.engine in VM_ENGINES:
        for result in run.vm_results_json or []:
            if saved_snapshot(result):
                vm = _vm_for_result(db, run, result)
                point = _point(db, run, vm.vm_uuid, result)
                point.vm_id = vm.id
                points.append(point)
    else:
        job = db.get(Job, run.job_id) if run.job_id is not None else None
        for result in _source_results(run, update, job):
            if saved_snapshot(result):
                source = str(result.get("source") or _job_source(job))
                points.append(_point(db, run, source, result))
    for point in points:
        db.add(point)
        db.flush()
    return points


def _source_results(run: Run, update: RunUpdate, job: Job | None) -> list[Any]:
    """A disk_image/files run's per-source results; a lone top-level snapshot_id is one."""
    if run.source_results_json or not update.snapshot_id:
        return list(run.source_results_json or [])
    return [
        {
            "source": _job_source(job),
            "snapshot_id": update.snapshot_id,
            "backup_type": update.backup_type or "Full",
            "disk_manifests": run.disk_manifests_json or {},
            "total_bytes": run.bytes_total,
            "changed_bytes": run.bytes_transferred,
        }
    ]


def is_restorable(point: BackupPoint) -> bool:
    if not point.snapshot_id:
        return False
    return point.engine not in VM_ENGINES or bool(point.disk_manifests_json)


def point_out(point: BackupPoint) -> BackupPointOut:
    return BackupPointOut(
        id=point.id,
        run_id=point.run_id,
        job_id=point.job_id,
        agent_id=point.agent_id,
        vm_id=point.vm_id,
        engine=point.engine,
        source=point.source_key,
        source_name=point.source_name,
        backup_type=point.backup_type,
        snapshot_id=point.snapshot_id,
        manifest_id=point.manifest_id,
        parent_backup_id=point.parent_backup_id,
        disk_manifests=point.disk_manifests_json or {},
        change_tokens=point.change_tokens_json or {},
        disk_count=point.disk_count,
        total_size_bytes=point.total_size_bytes,
        changed_size_bytes=point.changed_size_bytes,
        duration_seconds=point.duration_seconds,
        consistency_level=point.consistency_level,
        created_at=point.created_at,
        has_warnings=point.has_warnings,
        warning_code=point.warning_code,
        warnings=list(point.warnings_json or []),
        restore_chain=[point.manifest_id] if point.manifest_id else [],
        restore_chain_length=1,
        is_restorable=is_restorable(point),
    )


def get_point(db: Session, actor: Actor, point_id: int) -> BackupPoint | None:
    point = db.get(BackupPoint, point_id)
    return point if point is not None and actor.sees(point.tenant_id) else None


def list_points(
    db: Session,
    actor: Actor,
    *,
    job_id: int | None = None,
    vm_id: int | None = None,
    agent_id: int | None = None,
    backup_type: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[BackupPoint], int]:
    where: list[Any] = [BackupPoint.tenant_id.in_(actor.tenant_ids)]
    if job_id is not None:
        where.append(BackupPoint.job_id == job_id)
    if vm_id is not None:
        where.append(BackupPoint.vm_id == vm_id)
    if agent_id is not None:
        where.append(BackupPoint.agent_id == agent_id)
    if backup_type is not None:
        where.append(func.lower(BackupPoint.backup_type) == backup_type.lower())
    total = db.scalar(select(func.count()).select_from(BackupPoint).where(*where)) or 0
    query = (
        select(BackupPoint)
        .where(*where)
        .order_by(BackupPoint.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(db.scalars(query)), total


def latest_points_by_source(db: Session, job_id: int) -> dict[str, BackupPoint]:
    """The newest point per source of a job (a VM's parent and change tokens for next_run)."""
    newest = (
        select(func.max(BackupPoint.id))
        .where(BackupPoint.job_id == job_id)
        .group_by(BackupPoint.source_key)
    )
    rows = db.scalars(select(BackupPoint).where(BackupPoint.id.in_(newest)))
    return {p.source_key: p for p in rows}


def latest_per_source(db: Session, actor: Actor, limit: int = 500) -> list[BackupPoint]:
    """The newest point of each (job, source) the actor sees, newest first: a VM's last backup
    and its consistency, a disk or folder source's last point."""
    newest = (
        select(func.max(BackupPoint.id))
        .where(BackupPoint.tenant_id.in_(actor.tenant_ids))
        .group_by(BackupPoint.job_id, BackupPoint.source_key)
    )
    query = (
        select(BackupPoint)
        .where(BackupPoint.id.in_(newest))
        .order_by(BackupPoint.id.desc())
        .limit(limit)
    )
    return list(db.scalars(query))
