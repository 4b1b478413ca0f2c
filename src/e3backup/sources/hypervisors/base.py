"""The provider interface shared by QEMU/KVM and Hyper-V (the VM engine depends only on this).

Terms:
- *token*: an opaque per-disk change-tracking reference recorded in a snapshot (QEMU: a
  persistent dirty bitmap name; Hyper-V: an RCT id). The next backup passes it back; the
  provider answers with the extents changed since then, or with the reason it cannot.
- *point-in-time view*: what `prepare` returns. Data read from it does not change while the VM
  keeps running. `commit` advances the tokens (called only once the snapshot is durable);
  `cleanup` removes every trace (exports, checkpoints, freezes) and is called on success,
  failure and cancellation alike; without a prior `commit` it keeps the old tokens valid.

Consistency levels (seed 002): `Application` (guest quiesced: VSS / fsfreeze), `Crash` (atomic
point without quiesce), `CrashNoCheckpoint` (no point-in-time view possible: live read).
Warning codes: `QUIESCE_FAILED` when Application was asked but the guest could not be quiesced
(no agent, agent silent, freeze refused) and the backup fell back to Crash;
`CHECKPOINTS_DISABLED` (the seed's code) when no checkpoint could be taken at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from e3backup.core.errors import SourceError
from e3backup.sources.disk_reader import DiskReader


class HypervisorError(SourceError):
    """The hypervisor refused, is unreachable, or the VM cannot be backed up as asked."""

    exit_code = 32


class VmNotFound(HypervisorError):
    exit_code = 33


class ConsistencyLevel(StrEnum):
    APPLICATION = "Application"
    CRASH = "Crash"
    CRASH_NO_CHECKPOINT = "CrashNoCheckpoint"


WARNING_QUIESCE_FAILED = "QUIESCE_FAILED"
WARNING_CHECKPOINTS_DISABLED = "CHECKPOINTS_DISABLED"


@dataclass(frozen=True)
class VmDisk:
    name: str  # stable within the VM (QEMU: block node name; Hyper-V: controller location)
    path: str  # the image file on the host
    format: str  # qcow2, raw, vhdx, ...
    size_bytes: int
    change_tracking: bool  # the provider can report changed extents for this disk


@dataclass(frozen=True)
class VmInfo:
    id: str  # UUID / Hyper-V VMId (GUID)
    name: str
    state: str  # running, paused, off, ...
    machine_type: str  # QEMU machine type; Hyper-V "generation 2"
    disks: tuple[VmDisk, ...]
    config: dict[str, Any] = field(default_factory=dict)  # stored in the snapshot

    @property
    def change_tracking(self) -> bool:
        return any(d.change_tracking for d in self.disks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "machine_type": self.machine_type,
            "change_tracking": self.change_tracking,
            "disks": [
                {
                    "name": d.name,
                    "path": d.path,
                    "format": d.format,
                    "size_bytes": d.size_bytes,
                    "change_tracking": d.change_tracking,
                }
                for d in self.disks
            ],
        }


@dataclass
class DiskView:
    """One disk of a point-in-time view."""

    disk: VmDisk
    reader: DiskReader
    new_token: str | None  # token to record in this snapshot (None: no change tracking)
    # Extents changed since the token passed to `prepare` (None: not available, see reason).
    changed_extents: list[tuple[int, int]] | None = None
    tracking_reason: str = ""  # why changed extents are unavailable
    # Set by `commit` when it learns more than `new_token` (Hyper-V: the RCT id, see
    # hyperv/records.py): what the server keeps and sends back with the next run.
    committed_token: str | None = None


class PointInTimeView(Protocol):
    consistency: ConsistencyLevel
    warnings: list[str]
    warning_code: str | None
    checkpoint_id: str

    def disks(self) -> list[DiskView]: ...

    def commit(self) -> None:
        """Advance change tracking: the next backup's changes start at this view's point."""

    def cleanup(self) -> None:
        """Idempotent. Without `commit`, the tokens passed to `prepare` stay valid."""


class HypervisorProvider(Protocol):
    name: str  # "qemu", "hyperv"

    def list_vms(self) -> list[VmInfo]: ...

    def get_vm(self, name_or_id: str) -> VmInfo:
        """By name or id/GUID (seed: getVMByNameOrGUID); raises VmNotFound."""

    def prepare(
        self,
        vm: VmInfo,
        consistency: ConsistencyLevel,
        tokens: dict[str, str],
    ) -> PointInTimeView:
        """Take the point-in-time view; `tokens` maps disk name → the parent snapshot's token.

        Falls back Application → Crash → CrashNoCheckpoint, with a warning and warning code.
        """


def merge_extents(
    extents: Iterator[tuple[int, int]] | list[tuple[int, int]],
) -> list[tuple[int, int]]:
    """Sorted, coalesced (offset, length) ranges."""
    out: list[tuple[int, int]] = []
    for offset, length in sorted(extents):
        if length <= 0:
            continue
        if out and offset <= out[-1][0] + out[-1][1]:
            last_off, last_len = out[-1]
            out[-1] = (last_off, max(last_len, offset + length - last_off))
        else:
            out.append((offset, length))
    return out
