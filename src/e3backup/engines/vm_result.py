"""What a VM backup job reports: per-VM results shaped like the seed's HyperVVMResult, the job
status, and events with the seed's message ids.

Message ids (seed 002; `params` in brackets):
- HYPERV_VM_STARTING [vm_name] — a VM's backup begins.
- HYPERV_CHECKPOINT_CREATED [vm_name, consistency_level, checkpoint_id] — the point-in-time
  view exists (the guest is thawed again); data read from now on is that moment's. (ours)
- HYPERV_DISK_PLAN [vm_name, disk, read_plan, reason] — Full/Incremental per disk. (ours)
- HYPERV_CHECKPOINTS_DISABLED [vm_name] — no checkpoint possible, crash-consistent live read.
- HYPERV_QUIESCE_FAILED [vm_name, message] — Application asked, guest not quiesced: Crash. (ours)
- HYPERV_VERIFY_MISMATCH [vm_name, disk, chunk] — sampled re-read disagreed with change
  tracking; that disk is read Full. (ours)
- HYPERV_VM_COMPLETE [vm_name, backup_type, consistency_level]
- HYPERV_VM_FAILED [vm_name, message]
- CANCEL_REQUESTED, CANCELLED
- HYPERV_BACKUP_COMPLETE [message, status]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

VM_STARTING = "HYPERV_VM_STARTING"
CHECKPOINT_CREATED = "HYPERV_CHECKPOINT_CREATED"
DISK_PLAN = "HYPERV_DISK_PLAN"
CHECKPOINTS_DISABLED = "HYPERV_CHECKPOINTS_DISABLED"
QUIESCE_FAILED = "HYPERV_QUIESCE_FAILED"
VERIFY_MISMATCH = "HYPERV_VERIFY_MISMATCH"
VM_COMPLETE = "HYPERV_VM_COMPLETE"
VM_FAILED = "HYPERV_VM_FAILED"
CANCEL_REQUESTED = "CANCEL_REQUESTED"
CANCELLED = "CANCELLED"
BACKUP_COMPLETE = "HYPERV_BACKUP_COMPLETE"

STATUS_SUCCESS = "success"
STATUS_PARTIAL = "partial_success"
STATUS_FAILED = "failed"
STATUS_CANCELLED = "cancelled"


@dataclass(frozen=True)
class VmEvent:
    message_id: str
    params: dict[str, Any]
    level: str = "info"  # info | warning | error


EventCallback = Callable[[VmEvent], None]


@dataclass
class VmResult:
    """Seed HyperVVMResult. `change_tokens`: each disk's token in the snapshot;
    `committed_tokens`: what commit learnt beyond it (Hyper-V: the RCT id records,
    hyperv/records.py). The seed's `rct_ids` (kept by the server, handed back with the next
    run) is the committed token where there is one, else the snapshot's token."""

    vm_id: str
    vm_name: str
    backup_type: str | None = None  # Full | Incremental
    checkpoint_id: str | None = None
    change_tokens: dict[str, str] = field(default_factory=dict)
    committed_tokens: dict[str, str] = field(default_factory=dict)
    disk_manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    snapshot_id: str | None = None
    total_bytes: int = 0
    changed_bytes: int = 0
    bytes_read: int = 0
    verify_bytes_read: int = 0
    bytes_uploaded: int = 0
    consistency_level: str | None = None
    duration_seconds: float = 0.0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    warning_code: str | None = None
    status: str = STATUS_SUCCESS  # success | failed | cancelled

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["rct_ids"] = doc["change_tokens"] | doc.pop("committed_tokens")
        return doc


@dataclass
class JobResult:
    status: str
    vm_results: list[VmResult]
    duration_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "duration_seconds": round(self.duration_seconds, 3),
            "vm_results": [r.to_dict() for r in self.vm_results],
        }


def job_status(results: list[VmResult], cancelled: bool) -> str:
    if cancelled:
        return STATUS_CANCELLED
    ok = sum(r.status == STATUS_SUCCESS for r in results)
    if results and ok == len(results):
        return STATUS_SUCCESS
    return STATUS_PARTIAL if ok else STATUS_FAILED
