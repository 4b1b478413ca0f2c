"""Client API: VMs with their disks and backup points (seed 001 shape), every engine's backup
points, and starting a restore."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from e3backup.server.db.models import Job
from e3backup.server.deps import Ctx, CurrentActor, Db
from e3backup.server.schemas.client import VmDiskOut, VmOut
from e3backup.server.schemas.common import IdPath, IdQuery, OffsetQuery, Page
from e3backup.server.schemas.points import BackupPointOut, RestoreRequest, RestoreStarted
from e3backup.server.services import backup_points, restores, vms

router = APIRouter(prefix="/api/v1", tags=["backup points"])
TypeFilter = Annotated[str | None, Query(alias="type", max_length=20, pattern=r"^[A-Za-z_-]*$")]
Limit = Annotated[int, Query(ge=1, le=200)]
Offset = OffsetQuery


@router.get("/backup_points", response_model=Page[BackupPointOut])
def list_backup_points(
    actor: CurrentActor,
    db: Db,
    job_id: IdQuery = None,
    vm_id: IdQuery = None,
    agent_id: IdQuery = None,
    backup_type: TypeFilter = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[BackupPointOut]:
    rows, total = backup_points.list_points(
        db,
        actor,
        job_id=job_id,
        vm_id=vm_id,
        agent_id=agent_id,
        backup_type=backup_type,
        limit=limit,
        offset=offset,
    )
    items = [backup_points.point_out(p) for p in rows]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.get("/vms", response_model=Page[VmOut])
def list_vms(
    actor: CurrentActor,
    db: Db,
    agent_id: IdQuery = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[VmOut]:
    rows, total = vms.list_vms(db, actor, agent_id, limit, offset)
    disks = vms.vm_disks(db, [vm.id for vm in rows])
    items = [
        VmOut.model_validate(vm).model_copy(
            update={"disks": [VmDiskOut.model_validate(d) for d in disks[vm.id]]}
        )
        for vm in rows
    ]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.get("/vms/{vm_id}/backup_points")
def vm_backup_points(
    vm_id: IdPath,
    actor: CurrentActor,
    db: Db,
    backup_type: TypeFilter = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Seed 001 cloudbackup_hyperv_backup_points: the VM, its disks, its points."""
    vm = vms.get_vm(db, actor, vm_id)
    rows, total = backup_points.list_points(
        db, actor, vm_id=vm.id, backup_type=backup_type, limit=limit, offset=offset
    )
    job = db.get(Job, rows[0].job_id) if rows and rows[0].job_id is not None else None
    vm_doc = VmOut.model_validate(vm).model_dump(mode="json")
    vm_doc.update(job_id=job.id if job else None, job_name=job.name if job else None)
    return {
        "status": "success",
        "vm": vm_doc,
        "disks": [
            VmDiskOut.model_validate(d).model_dump(mode="json")
            for d in vms.vm_disks(db, [vm.id])[vm.id]
        ],
        "backup_points": [backup_points.point_out(p).model_dump(mode="json") for p in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.post("/restores", response_model=RestoreStarted, status_code=201)
def start_restore(body: RestoreRequest, actor: CurrentActor, ctx: Ctx, db: Db) -> RestoreStarted:
    started = restores.start_restore(db, ctx.box, actor, body)
    point = started.point
    return RestoreStarted(
        message="Restore started",
        restore_run_id=started.run.id,
        restore_run_uuid=started.run.uuid,
        command_id=started.command.id,
        job_id=started.run.job_id,
        vm_name=point.source_name if point.vm_id is not None else None,
        disks_to_restore=len(started.disks) or 1,
        estimated_size_bytes=point.total_size_bytes,
        backup_type=point.backup_type,
        restore_chain_length=1,
    )
