"""What the live progress page shows of a run besides its row: one line per item (a VM of a VM
backup, a disk of a restore) with its own state, from the job's VM list, the run's events and,
at the end, its vm_results; and the dedup savings of the bytes read so far."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from e3backup.server.db.models import Job, Run, RunEvent, Vm
from e3backup.server.db.models.jobs import VM_ENGINES

# message_id → (the param naming the item, the item's state once that event arrived)
ITEM_EVENTS = {
    "HYPERV_VM_STARTING": ("vm_name", "running"),
    "HYPERV_VM_COMPLETE": ("vm_name", "success"),
    "HYPERV_VM_FAILED": ("vm_name", "failed"),
    "HYPERV_RESTORE_DISK_STARTING": ("disk_name", "running"),
    "HYPERV_RESTORE_DISK_COMPLETE": ("disk_name", "success"),
    "HYPERV_RESTORE_DISK_FAILED": ("disk_name", "failed"),
}


@dataclass
class ItemState:
    name: str
    state: str  # queued | running | success | failed | cancelled | warning
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "state": self.state, "detail": self.detail}


def _planned(db: Session, run: Run) -> list[str]:
    """Items known before any event: the job's chosen VMs, or the disks a restore asked for."""
    if run.run_type == "backup" and run.engine in VM_ENGINES and run.job_id is not None:
        job = db.get(Job, run.job_id)
        chosen = [str(v) for v in (job.vms_json or [])] if job is not None else []
        names = {
            vm.vm_uuid: vm.name
            for vm in db.scalars(
                select(Vm).where(Vm.agent_id == run.agent_id, Vm.vm_uuid.in_(chosen))
            )
        }  # a job lists a VM by uuid or name; events name it
        return [names.get(v, v) for v in chosen]
    restore = run.restore_json or {}
    return [str(d).replace("\\", "/").rsplit("/", 1)[-1] for d in restore.get("disk_filter") or []]


def _result_detail(result: dict[str, Any]) -> str:
    if result.get("error"):
        return str(result["error"])[:300]
    parts = [str(result[k]) for k in ("backup_type", "consistency_level") if result.get(k)]
    if result.get("consistency_level"):
        parts[-1] += "-consistent"
    return ", ".join(parts)


def item_states(db: Session, run: Run) -> list[ItemState]:
    """Per-item states in first-seen order; empty for runs that have no items (a file backup)."""
    items: dict[str, ItemState] = {name: ItemState(name, "queued") for name in _planned(db, run)}
    events = db.scalars(
        select(RunEvent)
        .where(RunEvent.run_id == run.id, RunEvent.message_id.in_(list(ITEM_EVENTS)))
        .order_by(RunEvent.id)
    )
    for event in events:
        param, state = ITEM_EVENTS[event.message_id]
        params = event.params_json or {}
        name = str(params.get(param) or "")
        if not name:
            continue
        item = items.setdefault(name, ItemState(name, state))
        item.state = state
        if state == "failed":
            item.detail = str(params.get("message") or "")[:300]
    for result in run.vm_results_json or []:
        if not isinstance(result, dict):
            continue
        name = str(result.get("vm_name") or result.get("vm_id") or "")
        if not name:
            continue
        state = "failed" if result.get("error") else str(result.get("status") or "success")
        item = items.setdefault(name, ItemState(name, state))
        item.state, item.detail = state, _result_detail(result)
    return list(items.values())


def dedup_savings(bytes_processed: int | None, bytes_uploaded: int | None) -> float | None:
    """The share of the bytes read that did not need uploading (0..1), None before uploads."""
    if not bytes_processed or bytes_uploaded is None:
        return None
    return max(0.0, min(1.0, 1 - bytes_uploaded / bytes_processed))


def run_job(db: Session, run: Run) -> Job | None:
    """The run's job, also once deleted (its runs stay readable); the run was already scoped."""
    return db.get(Job, run.job_id) if run.job_id is not None else None
