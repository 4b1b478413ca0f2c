"""Resilient Change Tracking: the changed extents of a disk since a stored RCT id, and the
chain checks that decide whether those ids can still be trusted.

The token stored in a repository snapshot (`Token`) names the recovery snapshot, the disk's
identity and size; it is the key under which the RCT ids learnt at commit are kept, on this
host and on the server (records.py explains why and how the next run finds them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from e3backup.sources.hypervisors.base import HypervisorError, merge_extents
from e3backup.sources.hypervisors.hyperv.powershell import as_int, as_list
from e3backup.sources.hypervisors.hyperv.records import HOST, Committed
from e3backup.sources.hypervisors.hyperv.snapshots import ReferencePoint
from e3backup.sources.hypervisors.hyperv.wmi import Wmi

TOKEN_VERSION = 1
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
            f"no RCT reference point was recorded for checkpoint {token.checkpoint} on this "
            "host nor by the server (its run did not finish or was not reported): full read"
        )
    origin = "" if committed.origin == HOST else f" (from {committed.origin})"
    rct_id = committed.rct_ids.get(disk_name)
    point = points.get(committed.reference_point)
    if point is None:
        gone = "no longer exists" if committed.origin == HOST else "is not one of this VM's"
        return None, (
            f"RCT reference point {committed.reference_point}{origin} {gone} (removed by "
            "another tool, VM re-imported or migrated): full read"
        )
    if not rct_id or rct_id not in point.rct_ids:
        return None, (
            f"RCT id {rct_id or '(none)'}{origin} of disk {disk_name} is not in reference point "
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
