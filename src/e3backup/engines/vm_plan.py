"""VM backup decisions: parent verification, Full vs Incremental per disk, and the sampled
re-read of "unchanged" chunks that catches change tracking that missed writes."""

from __future__ import annotations

import random
from dataclasses import dataclass

from e3backup.core.errors import E3Error
from e3backup.engines.read_plan import chunks_touching
from e3backup.repo import formats
from e3backup.repo.disk_index import ParentIndexCursor
from e3backup.repo.manifest import DiskRecord, Snapshot
from e3backup.repo.repository import Repository
from e3backup.sources.disk_reader import DiskReader

DEFAULT_SAMPLE_CHUNKS = 8


def verify_parent(repo: Repository, parent: Snapshot) -> str:
    """'' when the parent can serve as an incremental base, else why not.

    Every index page must decode and every chunk it names must be in the repository: a parent
    with missing or damaged data is never cloned into a new snapshot.
    """
    try:
        for disk in parent.disks:
            missing = sum(
                1
                for chunk_id in repo.disk_chunk_ids(disk)
                if chunk_id != formats.ZERO_ID and chunk_id not in repo.index
            )
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


def sample_unchanged(
    changed_extents: list[tuple[int, int]],
    size_bytes: int,
    chunk_size: int,
    count: int,
    rng: random.Random | None = None,
) -> list[int]:
    """Up to `count` random chunk numbers that change tracking says are unchanged, ascending."""
    count_all = -(-size_bytes // chunk_size)
    touched = set(chunks_touching(changed_extents, chunk_size, size_bytes))
    candidates = [n for n in range(count_all) if n not in touched]
    rng = rng or random.Random()
    return sorted(rng.sample(candidates, min(count, len(candidates))))


@dataclass(frozen=True)
class SampleCheck:
    chunks_checked: int
    bytes_read: int
    mismatch: int | None  # first chunk number whose content differs from the parent


def check_sample(
    repo: Repository,
    parent_disk: DiskRecord,
    reader: DiskReader,
    chunk_numbers: list[int],
) -> SampleCheck:
    cursor = ParentIndexCursor(repo, parent_disk)
    chunk_size = parent_disk.chunk_size
    bytes_read = 0
    for n in chunk_numbers:
        length = min(chunk_size, reader.size_bytes - n * chunk_size)
        data = reader.read(n * chunk_size, length)
        bytes_read += length
        got = formats.ZERO_ID if data.count(0) == length else repo.codec.chunk_id(data)
        if got != cursor.get(n):
            return SampleCheck(len(chunk_numbers), bytes_read, n)
    return SampleCheck(len(chunk_numbers), bytes_read, None)
