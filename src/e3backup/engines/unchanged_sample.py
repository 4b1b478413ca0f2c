"""The sampled re-read of chunks a change tracker calls unchanged (DESIGN §5.4).

After an incremental backup, a few random chunks outside the changed extents are read again and
compared with the parent's index: a mismatch means the tracker missed writes, and the disk is
read in full instead. VM bitmaps and `backup image --changed-extents` lists both go through it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from e3backup.engines.backup import DiskBackup, DiskPlan
from e3backup.engines.read_plan import chunks_touching
from e3backup.repo import formats
from e3backup.repo.disk_index import ParentIndexCursor
from e3backup.repo.manifest import DiskRecord
from e3backup.repo.repository import Repository
from e3backup.sources.disk_reader import DiskReader

DEFAULT_SAMPLE_CHUNKS = 8


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


def mismatch_reason(chunk: int) -> str:
    """The read-plan reason recorded when the sample caught a missed write."""
    return (
        f"sampled verification: chunk {chunk} differs from the parent although change "
        "tracking reported it unchanged: full read"
    )


@dataclass(frozen=True)
class CheckedRun:
    record: DiskRecord
    check: SampleCheck | None  # None when the plan was not incremental

    @property
    def mismatch(self) -> bool:
        return self.check is not None and self.check.mismatch is not None


def run_checked(
    engine: DiskBackup,
    pool: ThreadPoolExecutor,
    plan: DiskPlan,
    sample_chunks: int,
    on_mismatch: Callable[[int], None] | None = None,
) -> CheckedRun:
    """Run the plan; an incremental run is checked by the sampled re-read and, when a chunk
    outside the changed extents differs from the parent, `on_mismatch(chunk)` is told and the
    disk is read again in full (the record's reason says why)."""
    record = engine.run(plan, pool)
    if record.read_plan != "incremental" or plan.parent is None or plan.changed_extents is None:
        return CheckedRun(record, None)
    size = plan.reader.size_bytes
    sample = sample_unchanged(plan.changed_extents, size, plan.parent.chunk_size, sample_chunks)
    check = check_sample(engine.session.repo, plan.parent, plan.reader, sample)
    if check.mismatch is None:
        return CheckedRun(record, check)
    if on_mismatch is not None:
        on_mismatch(check.mismatch)
    engine.tracker.bytes_total += size  # the disk is processed a second time
    full = DiskPlan(plan.name, plan.reader, plan.parent, None, mismatch_reason(check.mismatch))
    return CheckedRun(engine.run(full, pool), check)
