"""The restore engine: a snapshot disk → a sparse file (or a device), fast and verified.

Chunk ids stream from the disk index page by page (a few pages are fetched ahead in parallel, so
the planner never waits on one small GET while the fetchers idle); runs of chunks stored next to
each other in one pack are fetched with one ranged read; fetches run in parallel under a cap on
bytes in flight; every chunk is decrypted and checked against its id before it is written at its
offset. All-zero chunks are not written unless the target needs them (see restore_targets), so
restored files keep their holes; the target is committed only when every chunk verified.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from e3backup.core.cancel import CancelToken, run_in_context
from e3backup.core.errors import E3Error
from e3backup.engines.progress import ProgressTracker
from e3backup.engines.restore_targets import RestoreTarget
from e3backup.repo import formats
from e3backup.repo.chunk_index import ChunkLocation
from e3backup.repo.manifest import DiskRecord
from e3backup.repo.repository import Repository

log = logging.getLogger(__name__)

MAX_RUN_BYTES = 8 * 1024 * 1024  # largest single ranged read
DEFAULT_IN_FLIGHT_BYTES = 128 * 1024 * 1024
PAGES_AHEAD = 8  # disk index pages (32 KiB each) fetched ahead of the planner


@dataclass
class FetchRun:
    """Chunks stored back to back in one pack: one ranged read."""

    pack_id: bytes
    start: int
    end: int
    items: list[tuple[int, bytes, ChunkLocation]] = field(default_factory=list)  # disk off, id


def plan_runs(repo: Repository, disk: DiskRecord) -> Iterator[FetchRun | tuple[int, int]]:
    """Yield FetchRuns for stored chunks and (offset, length) for all-zero chunks. Chunks are
    located a whole index page at a time (one vectorized lookup per page)."""
    run: FetchRun | None = None
    chunk_no = 0
    for page in repo.disk_pages(disk, pages_ahead=PAGES_AHEAD):
        for pos, found in zip(
            range(0, len(page), formats.ID_BYTES),
            repo.index.locate_many(page).locations(),
            strict=True,
        ):
            chunk_id = page[pos : pos + formats.ID_BYTES]
            offset = chunk_no * disk.chunk_size
            chunk_no += 1
            if chunk_id == formats.ZERO_ID:
                yield offset, min(disk.chunk_size, disk.size_bytes - offset)
                continue
            loc = found or repo.locate(chunk_id)  # locate says why it is missing
            adjacent = (
                run is not None
                and run.pack_id == loc.pack_id
                and run.end == loc.offset
                and loc.offset + loc.length - run.start <= MAX_RUN_BYTES
            )
            if not adjacent:
                if run is not None:
                    yield run
                run = FetchRun(loc.pack_id, loc.offset, loc.offset)
            assert run is not None
            run.items.append((offset, chunk_id, loc))
            run.end = loc.offset + loc.length
    if run is not None:
        yield run


class _ByteBudget:
    """Blocks producers while more than `limit` bytes are being fetched."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._cond = threading.Condition()

    def acquire(self, n: int, cancel: CancelToken) -> None:
        with self._cond:
            while self._used > 0 and self._used + n > self._limit:
                self._cond.wait(0.2)
                cancel.raise_if_cancelled()
            self._used += n

    def release(self, n: int) -> None:
        with self._cond:
            self._used -= n
            self._cond.notify_all()


class DiskRestore:
    def __init__(
        self,
        repo: Repository,
        tracker: ProgressTracker,
        cancel: CancelToken | None = None,
        parallelism: int | None = None,
        in_flight_bytes: int = DEFAULT_IN_FLIGHT_BYTES,
    ) -> None:
        self.repo = repo
        self.tracker = tracker
        self.cancel = cancel or CancelToken()
        self.parallelism = parallelism or max(4, repo.backend.properties().parallelism)
        self.budget = _ByteBudget(in_flight_bytes)

    def run(self, disk: DiskRecord, target: RestoreTarget) -> None:
        """Write the disk into `target`, committing it only when every chunk verified."""
        try:
            self._write(disk, target)
        except BaseException:
            target.abort()
            raise
        target.commit()

    def _write(self, disk: DiskRecord, target: RestoreTarget) -> None:
        write_zeros = target.writes_zeros
        errors: list[BaseException] = []

        def done(future: Future[None]) -> None:
            exc = future.exception()
            if exc is not None:
                errors.append(exc)

        with ThreadPoolExecutor(self.parallelism, thread_name_prefix="restore") as pool:
            try:
                for item in plan_runs(self.repo, disk):
                    self.cancel.raise_if_cancelled()
                    if errors:
                        break
                    if isinstance(item, tuple):
                        if write_zeros:
                            target.write(item[0], bytes(item[1]))
                        self.tracker.add(processed=item[1], transferred=item[1] * write_zeros)
                        continue
                    size = item.end - item.start
                    self.budget.acquire(size, self.cancel)
                    fetch = run_in_context(self._fetch_and_write)  # the bound cancel token
                    pool.submit(fetch, target, item).add_done_callback(done)
            except BaseException:
                self.cancel.cancel("restore stopped after an error")
                raise
        if errors:
            first = errors[0]
            raise first if isinstance(first, E3Error) else E3Error(f"restore failed: {first}")
        self.cancel.raise_if_cancelled()  # runs skipped after a cancel left gaps in the target

    def _fetch_and_write(self, target: RestoreTarget, run: FetchRun) -> None:
        size = run.end - run.start
        try:
            if self.cancel.cancelled:
                return
            data = memoryview(self.repo.read_pack_range(run.pack_id, run.start, size))
            written = 0
            for disk_offset, chunk_id, loc in run.items:
                if self.cancel.cancelled:
                    return  # the target is aborted: writing the rest of the run is wasted
                rel = loc.offset - run.start
                plain = self.repo.decode_chunk(data[rel : rel + loc.length], chunk_id, loc)
                target.write(disk_offset, plain)
                written += len(plain)
            self.tracker.add(processed=written, transferred=written)
        finally:
            self.budget.release(size)
