"""The VM registry: what each agent reports (report_vms), tenant-scoped reads."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from e3backup.server.db.base import utcnow
from e3backup.server.db.models import Agent, Vm, VmDisk
from e3backup.server.services.auth import Actor
from e3backup.server.services.errors import NotFound


def _disk_rows(vm_id: int, disks: list[dict[str, Any]]) -> list[VmDisk]:
    rows = []
    seen = set()
    for disk in disks:
        path = str(disk.get("disk_path") or disk.get("path") or "")[:1000]
        if not path or path in seen:
            continue
        seen.add(path)
        rows.append(
            VmDisk(
                vm_id=vm_id,
                disk_path=path,
                disk_name=str(disk.get("disk_name") or path.replace("\\", "/").rsplit("/", 1)[-1]),
                controller_type=str(disk.get("controller_type") or "")[:50],
                vhd_format=str(disk.get("vhd_format") or disk.get("format") or "")[:50],
                size_bytes=int(disk.get("size_bytes") or 0),
                change_token=(str(disk["rct_id"]) if disk.get("rct_id") else None),
            )
        )
    return rows


def report_vms(db: Session, agent: Agent, vms: list[dict[str, Any]]) -> int:
    """Upsert the agent's inventory; VMs missing from it are marked not present."""
    existing = {vm.vm_uuid: vm for vm in db.scalars(select(Vm).where(Vm.agent_id == agent.id))}
    now = utcnow()
    reported = set()
    for item in vms:
        vm_uuid = str(item.get("vm_guid") or item.get("vm_id") or item.get("vm_name") or "")[:200]
        if not vm_uuid or vm_uuid in reported:
            continue
        reported.add(vm_uuid)
        vm = existing.get(vm_uuid)
        if vm is None:
            vm = Vm(tenant_id=agent.tenant_id, agent_id=agent.id, vm_uuid=vm_uuid, name="")
            db.add(vm)
        vm.name = str(item.get("vm_name") or item.get("name") or vm_uuid)[:255]
        vm.hypervisor = str(item.get("hypervisor") or vm.hypervisor or "kvm")[:20]
        vm.state = str(item.get("state") or "")[:50]
        vm.generation = str(item.get("generation") or item.get("machine_type") or "")[:50]
        vm.change_tracking = bool(item.get("rct_enabled") or item.get("change_tracking"))
        vm.info_json = {k: v for k, v in item.items() if k != "disks"}
        vm.present = True
        vm.last_seen_at = now
        db.flush()
        db.execute(delete(VmDisk).where(VmDisk.vm_id == vm.id))
        db.add_all(_disk_rows(vm.id, list(item.get("disks") or [])))
    for vm_uuid, vm in existing.items():
        if vm_uuid not in reported:
            vm.present = False
    agent.vms_reported_at = now
    return len(reported)


def get_vm(db: Session, actor: Actor, vm_id: int) -> Vm:
    vm = db.get(Vm, vm_id)
    if vm is None or not actor.sees(vm.tenant_id):
        raise NotFound("VM not found or access denied")
    return vm


def vm_disks(db: Session, vm_ids: list[int]) -> dict[int, list[VmDisk]]:
    out: dict[int, list[VmDisk]] = {i: [] for i in vm_ids}
    for disk in db.scalars(select(VmDisk).where(VmDisk.vm_id.in_(vm_ids)).order_by(VmDisk.id)):
        out[disk.vm_id].append(disk)
    return out


def list_vms(
    db: Session, actor: Actor, agent_id: int | None, limit: int, offset: int
) -> tuple[list[Vm], int]:
    where: list[Any] = [Vm.tenant_id.in_(actor.tenant_ids)]
    if agent_id is not None:
        where.append(Vm.agent_id == agent_id)
    total = db.scalar(select(func.count()).select_from(Vm).where(*where)) or 0
    rows = db.scalars(select(Vm).where(*where).order_by(Vm.id).limit(limit).offset(offset))
    return list(rows), total


def agent_vms(db: Session, agent_id: int) -> list[Vm]:
    return list(db.scalars(select(Vm).where(Vm.agent_id == agent_id)))
