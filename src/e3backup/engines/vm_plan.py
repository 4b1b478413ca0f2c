"""VM backup decisions: parent verification and Full vs Incremental per disk (the sampled
re-read of "unchanged" chunks is shared with image backups: engines/unchanged_sample.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from e3backup.core.errors import E3Error
from e3backup.repo import formats
from e3backup.repo.manifest import DiskRecord, Snapshot
from e3backup.repo.repository import Repository


def verify_parent(repo: Repository, parent: Snapshot) -> str:
    """'' when the parent can serve as an incremental base, else why not.

    Every index page must decode and every chunk it names must be in the repository: a parent
    with missing or damaged data is never cloned into a new snapshot.
    """
    try:
        for disk in parent.disks:
            missing = 0
            for page in repo.disk_pages(disk):  # one batched lookup per page
                named = np.frombuffer(page, dtype=np.uint8).reshape(-1, formats.ID_BYTES).any(1)
                missing += int(np.count_nonzero(named & ~repo.index.contains_many(page)))
            if missing:
                return (
                    f"parent snapshot {parent.id[:12]} failed verification "
                    f"(disk {disk.name}: {missing} chunk(s) missing): full read"
                )
    except E3Error as exc:
        return f"parent snapshot {parent.id[:12]} failed verification ({exc}): full read"
    return ""


@dataclass(frozen=True)
class DiskDecision:
    incremental: bool
    reason: str  # why Full ('' for Incremental, or for a first backup explained by `reason`)


def decide(
    parent_disk: DiskRecord | None,
    parent_reason: str,
    size_bytes: int,
    chunk_size: int,
    changed_extents: list[tuple[int, int]] | None,
    tracking_reason: str,
) -> DiskDecision:
    """Incremental only when a verified parent exists, the token matched (the provider gave
    changed extents) and the size is unchanged; otherwise Full with the reason."""
    if parent_reason:
        return DiskDecision(False, parent_reason)
    if parent_disk is None:
        return DiskDecision(False, "no parent snapshot of this disk: full read")
    if parent_disk.size_bytes != size_bytes:
        return DiskDecision(
            False,
            f"disk size changed ({parent_disk.size_bytes} → {size_bytes} bytes): full read",
        )
    if parent_disk.chunk_size != chunk_size:
        return DiskDecision(False, "parent snapshot uses another chunk size: full read")
    if changed_extents is None:
        return DiskDecision(False, tracking_reason or "no change tracking: full read")
    return DiskDecision(True, "")
