"""VMs & backup points: the VMs of each agent with their last backup and its consistency, the
other sources (disk images, folders) with theirs, and the backup-points table of one VM or one
job (type filter, pagination, warnings, restorable badge) for every engine."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from fastapi.responses import Response

from e3backup.server.db.models import BackupPoint
from e3backup.server.schemas.common import IdPath, IdQuery
from e3backup.server.services import agents, backup_points, jobs, vms
from e3backup.server.services.errors import Invalid
from e3backup.server.web.view import PageView, View

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 20
MAX_LISTED = 500
BACKUP_TYPES = ("Full", "Incremental")
TypeQuery = Annotated[str, Query(alias="type", max_length=20)]
Offset = Annotated[int, Query(ge=0, le=10**9)]


def backup_type(text: str) -> str | None:
    if text and text.lower() not in {t.lower() for t in BACKUP_TYPES}:
        raise Invalid(f"type: one of {', '.join(BACKUP_TYPES)}", "type")
    return text or None


def agent_names(page: View) -> dict[int, str]:
    rows, _ = agents.list_agents(page.db, page.actor, MAX_LISTED, 0)
    return {a.id: a.hostname or f"agent #{a.id}" for a in rows}


@router.get("/vms")
def vms_page(page: PageView, agent_id: IdQuery = None) -> Response:
    vm_rows, total = vms.list_vms(page.db, page.actor, agent_id, MAX_LISTED, 0)
    latest = backup_points.latest_per_source(page.db, page.actor, MAX_LISTED)
    last_by_vm: dict[int, BackupPoint] = {}
    for point in latest:  # newest first: the first seen per VM is its last backup
        if point.vm_id is not None:
            last_by_vm.setdefault(point.vm_id, point)
    sources = [
        p for p in latest if p.vm_id is None and (agent_id is None or p.agent_id == agent_id)
    ]
    job_rows, _ = jobs.list_jobs(page.db, page.actor, None, MAX_LISTED, 0)
    return page.render(
        "vms.html",
        vms=vm_rows,
        total=total,
        last_by_vm=last_by_vm,
        sources=sources,
        agent_names=agent_names(page),
        agent_id=agent_id,
        job_names={j.id: j.name for j in job_rows},
        restorable=backup_points.is_restorable,
    )


def _points_page(
    page: View, heading: dict[str, Any], kind: str, offset: int, **where: Any
) -> Response:
    rows, total = backup_points.list_points(
        page.db, page.actor, limit=PAGE_SIZE, offset=offset, **where
    )
    return page.render(
        "points.html",
        heading=heading,
        points=[backup_points.point_out(p) for p in rows],
        total=total,
        offset=offset,
        page_size=PAGE_SIZE,
        types=BACKUP_TYPES,
        kind=kind,
        type=str(where.get("backup_type") or ""),
    )


@router.get("/vms/{vm_id}")
def vm_points(vm_id: IdPath, page: PageView, type: TypeQuery = "", offset: Offset = 0) -> Response:
    """Seed 001 backup points of a VM, with its disks."""
    vm = vms.get_vm(page.db, page.actor, vm_id)
    heading: dict[str, Any] = {
        "title": vm.name,
        "subtitle": f"{vm.hypervisor} VM on {agent_names(page).get(vm.agent_id, 'an agent')}",
        "path": f"/vms/{vm.id}",
        "restore": urlencode({"vm_id": vm.id}),
        "disks": vms.vm_disks(page.db, [vm.id])[vm.id],
        "vm": vm,
    }
    return _points_page(page, heading, "vm", offset, vm_id=vm.id, backup_type=backup_type(type))


@router.get("/backup-points")
def job_points(
    page: PageView, job_id: IdQuery = None, type: TypeQuery = "", offset: Offset = 0
) -> Response:
    """The backup points of one job (any engine), or of every job the actor sees."""
    job = jobs.get_job(page.db, page.actor, job_id) if job_id is not None else None
    heading: dict[str, Any] = {
        "title": f"Backup points of {job.name}" if job else "All backup points",
        "subtitle": f"{job.engine.replace('_', ' ')} job" if job else "every job and engine",
        "path": "/backup-points",
        "query": urlencode({"job_id": job.id}) if job else "",
        "restore": urlencode({"job_id": job.id}) if job else "",
        "disks": [],
        "vm": None,
    }
    return _points_page(page, heading, "job", offset, job_id=job_id, backup_type=backup_type(type))
