"""The disk backup engine: a bounded pipeline read → hash → dedup → compress → encrypt → pack → put.

Worker threads each read, hash, compress and encrypt one chunk (the heavy calls release the GIL,
so both cores work); packs upload on their own pool. At most `max_in_flight` chunks are in
memory, and results are consumed in disk order so pages of the disk index stream out: memory
does not grow with the disk size.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from e3backup.core.cancel import CancelToken
from e3backup.engines.progress import ProgressTracker
from e3backup.engines.read_plan import chunks_touching
from e3backup.repo import formats
from e3backup.repo.disk_index import DiskIndexWriter, ParentIndexCursor
from e3backup.repo.manifest import DiskRecord
from e3backup.repo.session import WriteSession
from e3backup.sources.disk_reader import DiskReader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkResult:
    chunk_id: bytes
    read_bytes: int
    blob: bytes | None = None  # encoded, when the chunk is new to the repository


@dataclass
class DiskPlan:
    """How to back up one disk: `changed_extents=None` means read all allocated data."""

    name: str
    reader: DiskReader
    parent: DiskRecord | None = None
    changed_extents: list[tuple[int, int]] | None = None
    reason: str = ""


def default_workers() -> int:
    return (os.cpu_count() or 2) + 2  # reads overlap with CPU work


class DiskBackup:
    def __init__(
        self,
        session: WriteSession,
        tracker: ProgressTracker,
        cancel: CancelToken | None = None,
        workers: int | None = None,
    ) -> None:
        self.session = session
        self.codec = session.repo.codec
        self.chunk_size = session.repo.config.chunk_size
        self.tracker = tracker
        self.cancel = cancel or CancelToken()
        self.workers = workers or default_workers()
        self._zero = bytes(self.chunk_size)

    def run(self, plan: DiskPlan, pool: ThreadPoolExecutor) -> DiskRecord:
        reader, size = plan.reader, plan.reader.size_bytes
        count = -(-size // self.chunk_size)
        parent = plan.parent
        usable_parent = parent is not None and parent.chunk_size == self.chunk_size
        cursor = ParentIndexCursor(self.session.repo, parent) if usable_parent and parent else None
        incremental = plan.changed_extents is not None and cursor is not None
        if incremental:
            assert plan.changed_extents is not None
            extents: Iterable[tuple[int, int]] = plan.changed_extents
        else:
            extents = reader.allocated_extents()
        to_read = iter(chunks_touching(extents, self.chunk_size, size))
        next_read = next(to_read, count)

        record = DiskRecord(plan.name, size, self.chunk_size, pages=[])
        record.read_plan = "incremental" if incremental else "full"
        record.read_plan_reason = plan.reason
        pages = DiskIndexWriter(self.session)
        window: deque[tuple[bytes | Future[ChunkResult], bytes | None]] = deque()
        max_in_flight = self.workers * 4

        def drain(limit: int) -> None:
            """Consume results in disk order, so index pages stream out."""
            while len(window) > limit or (window and not isinstance(window[0][0], Future)):
                item, parent_id = window.popleft()
                if isinstance(item, Future):
                    result = item.result()
                    # After a cancel, _process returns placeholder ids: never index them.
                    self.cancel.raise_if_cancelled()
                    record.bytes_read += result.read_bytes
                    if result.blob is not None:
                        # Appended in disk order, so restores read long runs per pack.
                        self.session.add_blob(
                            formats.BLOB_DATA, result.chunk_id, result.blob, result.read_bytes
                        )
                        record.bytes_uploaded += len(result.blob)
                    if result.chunk_id == formats.ZERO_ID:
                        record.chunks_zero += 1
                    if result.chunk_id != (parent_id or formats.ZERO_ID):
                        record.bytes_changed += result.read_bytes
                    item = result.chunk_id
                pages.append(item)

        for chunk_no in range(count):
            self.cancel.raise_if_cancelled()
            length = min(self.chunk_size, size - chunk_no * self.chunk_size)
            parent_id = cursor.get(chunk_no) if cursor and chunk_no < cursor.count else None
            if chunk_no == next_read:
                future = pool.submit(self._process, reader, chunk_no, length)
                window.append((future, parent_id))
                next_read = next(to_read, count)
            else:
                # Not read: all zeros (full) or unchanged since the parent (incremental).
                inherited = parent_id if incremental and parent_id else formats.ZERO_ID
                if inherited == formats.ZERO_ID:
                    record.chunks_zero += 1
                window.append((inherited, parent_id))
                self.tracker.add(processed=length)
            drain(max_in_flight)
        drain(0)
        record.pages = pages.finish()
        return record

    def _process(self, reader: DiskReader, chunk_no: int, length: int) -> ChunkResult:
        if self.cancel.cancelled:
            return ChunkResult(formats.ZERO_ID, 0)  # discarded: the engine raises CancelledError
        data = reader.read(chunk_no * self.chunk_size, length)
        if data == self._zero[:length]:
            self.tracker.add(processed=length, read=length)
            return ChunkResult(formats.ZERO_ID, length)
        chunk_id = self.codec.chunk_id(data)
        blob = self.codec.encode(data, chunk_id) if self.session.reserve(chunk_id) else None
        self.tracker.add(processed=length, transferred=len(blob or b""), read=length)
        return ChunkResult(chunk_id, length, blob)
