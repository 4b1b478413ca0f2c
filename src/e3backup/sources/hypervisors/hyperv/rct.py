"""Resilient Change Tracking: the changed extents of a disk since a stored RCT id, the chain
checks that decide whether those ids can still be trusted, and the record that links a
backup's token to the RCT ids Hyper-V gave it.

Tokens: RCT ids exist only once the recovery snapshot is converted to a reference point, and
that happens after the backup is durable, when the snapshot record is already written. So the
token stored in the snapshot names the recovery snapshot, the disk's identity and size; the
conversion's outcome (reference point and RCT id per disk) is recorded on the host
(`RctState`, a small JSON file). A token whose record is missing — the run died before
converting, the agent's state was lost, the VM came from another host — means a full read.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e3backup.sources.hypervisors.base import HypervisorError, merge_extents
from e3backup.sources.hypervisors.hyperv.powershell import as_int, as_list
from e3backup.sources.hypervisors.hyperv.snapshots import ReferencePoint
from e3backup.sources.hypervisors.hyperv.wmi import Wmi

TOKEN_VERSION = 1
STATE_FILE = "hyperv-rct.json"
KEEP_CHECKPOINTS = 4  # per VM: the newest records (older backups are never parents)
MAX_QUERIES = 100_000

CHANGES = r"""
$svc = Get-CimInstance -Namespace root\virtualization\v2 -ClassName Msvm_ImageManagementService
$out = Invoke-CimMethod -InputObject $svc -MethodName GetVirtualDiskChanges -Arguments @{
  Path = $p.path; LimitId = $p.limit; TargetSnapshotId = '';
  ByteOffset = [uint64]$p.offset; ByteLength = [uint64]$p.length }
@{ ReturnValue = [int]$out.ReturnValue; Job = "$($out.Job.InstanceID)";
   ProcessedByteLength = [uint64]$out.ProcessedByteLength;
   ChangedByteOffsets = @($out.ChangedByteOffsets);
   ChangedByteLengths = @($out.ChangedByteLengths) }
"""


@dataclass(frozen=True)
class Token:
    checkpoint: str  # the recovery snapshot's InstanceID
    disk_id: str  # Get-VHD DiskIdentifier
    size: int

    def encode(self) -> str:
        doc = {"v": TOKEN_VERSION, "checkpoint": self.checkpoint, "disk": self.disk_id}
        return json.dumps(doc | {"size": self.size}, separators=(",", ":"), sort_keys=True)

    @classmethod
    def decode(cls, text: str) -> Token | None:
        try:
            doc = json.loads(text)
            if doc.get("v") != TOKEN_VERSION:
                return None
            return cls(str(doc["checkpoint"]), str(doc["disk"]), int(doc["size"]))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def changed_extents(
    wmi: Wmi, path: str, rct_id: str, size: int, granularity: int
) -> list[tuple[int, int]]:
    """GetVirtualDiskChanges over the whole disk, continued from ByteOffset +
    ProcessedByteLength until the disk is covered; extents aligned out to `granularity`,
    clipped to the disk and merged. WmiError / HypervisorError when Hyper-V refuses."""
    extents: list[tuple[int, int]] = []
    offset = 0
    for _ in range(MAX_QUERIES):
        if offset >= size:
            break
        params = {"path": path, "limit": rct_id, "offset": offset, "length": size - offset}
        out = wmi.call("get-virtual-disk-changes", CHANGES, params, "querying RCT changes")
        processed = as_int(out.outputs.get("ProcessedByteLength"))
        offsets = [as_int(v) for v in as_list(out.outputs.get("ChangedByteOffsets"))]
        lengths = [as_int(v) for v in as_list(out.outputs.get("ChangedByteLengths"))]
        if len(offsets) != len(lengths):
            raise HypervisorError(
                f"GetVirtualDiskChanges gave {len(offsets)} offsets but {len(lengths)} lengths"
            )
        if processed <= 0:
            raise HypervisorError(
                f"GetVirtualDiskChanges processed nothing at byte {offset} of {size}"
            )
        extents += zip(offsets, lengths, strict=True)
        offset += processed
    else:
        raise HypervisorError(f"GetVirtualDiskChanges did not cover the disk ({offset}/{size})")
    return align(extents, size, granularity)


def align(extents: list[tuple[int, int]], size: int, granularity: int) -> list[tuple[int, int]]:
    out = []
    for off, length in extents:
        if length <= 0 or off >= size:
            continue
        start = max(off - off % granularity, 0)
        end = min(-(-(off + length) // granularity) * granularity, size)
        out.append((start, end - start))
    return merge_extents(out)


@dataclass(frozen=True)
class Committed:
    """What a conversion gave: the reference point and the RCT id of each disk."""

    reference_point: str
    rct_ids: dict[str, str]  # disk name → RCT id

    def to_dict(self) -> dict[str, Any]:
        return {"reference_point": self.reference_point, "rct_ids": dict(self.rct_ids)}


def chain_check(
    disk_name: str,
    token_text: str,
    disk_id: str,
    size: int,
    committed: Committed | None,
    points: dict[str, ReferencePoint],
) -> tuple[str | None, str]:
    """(RCT id to query from, '') or (None, why the chain is broken: a full read)."""
    token = Token.decode(token_text)
    if token is None:
        return None, "the stored change token is not a Hyper-V RCT token: full read"
    if committed is None:
        return None, (
            f"no RCT reference point was recorded for checkpoint {token.checkpoint} (its run "
            "did not finish, or this host's agent state was lost): full read"
        )
    rct_id = committed.rct_ids.get(disk_name)
    point = points.get(committed.reference_point)
    if point is None:
        return None, (
            f"RCT reference point {committed.reference_point} no longer exists (removed by "
            "another tool, VM re-imported or migrated): full read"
        )
    if not rct_id or rct_id not in point.rct_ids:
        return None, (
            f"RCT id {rct_id or '(none)'} of disk {disk_name} is not in reference point "
            f"{point.instance_id} (it lists {', '.join(point.rct_ids) or 'none'}): full read"
        )
    if token.disk_id and disk_id and token.disk_id != disk_id:
        return None, (
            f"disk {disk_name} was replaced (disk identifier {token.disk_id} → {disk_id}): "
            "full read"
        )
    if token.size != size:
        return None, f"disk {disk_name} was resized ({token.size} → {size} bytes): full read"
    return rct_id, ""


def map_rct_ids(
    point: ReferencePoint, disk_names: list[str], instance_ids: dict[str, list[str]]
) -> dict[str, str]:
    """RCT id per disk name. VirtualDiskIdentifiers are WMI InstanceIDs of the disks; match
    them against the ones we know per disk (VM and snapshot settings), else by position
    when the counts agree (the snapshot lists disks in the VM's order)."""
    out: dict[str, str] = {}
    for ident, rct_id in zip(point.disk_ids, point.rct_ids, strict=False):
        key = ident.casefold()
        tail = key.split("\\", 1)[-1]
        for name, known in instance_ids.items():
            folded = [k.casefold() for k in known if k]
            if key in folded or tail in [k.split("\\", 1)[-1] for k in folded]:
                out[name] = rct_id
                break
    if len(out) < len(disk_names) and len(point.rct_ids) == len(disk_names):
        out = dict(zip(disk_names, point.rct_ids, strict=True))
    return out


class RctState:
    """`<state dir>/hyperv-rct.json`: per VM, checkpoint → Committed, and the recovery
    snapshots this host created and has not yet converted or removed (a crashed run's
    leftovers, removed by the next run)."""

    _lock = threading.Lock()

    def __init__(self, directory: Path) -> None:
        self.path = directory / STATE_FILE

    def _load(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise HypervisorError(f"{self.path}: unreadable RCT state ({exc})") from exc
        return doc if isinstance(doc, dict) else {}

    def _save(self, doc: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)

    def _vm(self, doc: dict[str, Any], vm_id: str) -> dict[str, Any]:
        entry = doc.setdefault(vm_id, {})
        entry.setdefault("checkpoints", {})
        entry.setdefault("pending", [])
        return entry  # type: ignore[no-any-return]

    def committed(self, vm_id: str, checkpoint: str) -> Committed | None:
        with self._lock:
            found = self._load().get(vm_id, {}).get("checkpoints", {}).get(checkpoint)
        if not isinstance(found, dict):
            return None
        ids = found.get("rct_ids")
        rct: dict[str, Any] = ids if isinstance(ids, dict) else {}
        return Committed(str(found.get("reference_point", "")), {k: str(v) for k, v in rct.items()})

    def record(self, vm_id: str, checkpoint: str, committed: Committed) -> None:
        with self._lock:
            doc = self._load()
            entry = self._vm(doc, vm_id)
            entry["checkpoints"][checkpoint] = committed.to_dict()
            for old in list(entry["checkpoints"])[:-KEEP_CHECKPOINTS]:
                del entry["checkpoints"][old]
            if checkpoint in entry["pending"]:
                entry["pending"].remove(checkpoint)
            self._save(doc)

    def pending(self, vm_id: str) -> list[str]:
        with self._lock:
            return list(self._load().get(vm_id, {}).get("pending", []))

    def set_pending(self, vm_id: str, checkpoint: str, pending: bool) -> None:
        with self._lock:
            doc = self._load()
            entry = self._vm(doc, vm_id)
            if pending and checkpoint not in entry["pending"]:
                entry["pending"].append(checkpoint)
            elif not pending and checkpoint in entry["pending"]:
                entry["pending"].remove(checkpoint)
            self._save(doc)
