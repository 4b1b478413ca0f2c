"""Bringing a damaged repository back to a state where prune runs (`repo repair ...`).

- `repair_index` rebuilds the index from the packs, as restic's `repair index` does: every
  pack's encrypted trailer is read (only the tail of the pack), new index objects covering
  every blob of every readable pack are written, then the index objects that existed before
  are deleted. A pack whose trailer cannot be read is reported and left alone: entries the old
  index had for it are carried over. Index entries of packs that are gone are dropped.
- `repair_snapshots` finds snapshots that reference chunks in no index or in missing packs.
  By default they are reported and recorded as damaged (repo/verification.py: no backup builds
  on them); with `forget` they are forgotten through tombstones that protect nothing (their
  data is gone already), so the next prune can run; `dry_run` changes nothing.
Both register a write session first, so a concurrent prune keeps what they look at.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from e3backup.core.errors import E3Error, IntegrityError, ObjectNotFound
from e3backup.repo import formats, verification
from e3backup.repo.chunk_index import ChunkIndex, ChunkLocation, IndexEntries
from e3backup.repo.gc import INDEX_ENTRIES_PER_OBJECT, write_index_objects
from e3backup.repo.index_file import read_index_objects
from e3backup.repo.index_rows import rows_in_packs, take_rows
from e3backup.repo.manifest import Snapshot
from e3backup.repo.pack import PackEntry, read_trailer_from_tail, trailer_tail_length
from e3backup.repo.repository import Repository
from e3backup.repo.session import WriteSession
from e3backup.repo.tombstones import forget_snapshot

RepairProgress = Callable[[int, int], None]  # (bytes done, bytes total)
SCOPE_REPAIR = "repair snapshots"


@dataclass
class IndexRepairReport:
    packs: int = 0
    packs_indexed: int = 0
    blobs_indexed: int = 0
    unreadable_packs: dict[str, str] = field(default_factory=dict)  # pack id -> why
    old_index_objects: int = 0
    unreadable_index_objects: int = 0
    index_objects_written: int = 0
    entries_of_missing_packs: int = 0  # dropped: the old index named packs that are gone


@dataclass
class SnapshotDamage:
    snapshot_id: str
    source_name: str
    time: str
    problems: list[str]


@dataclass
class SnapshotRepairReport:
    snapshots_checked: int = 0
    damaged: list[SnapshotDamage] = field(default_factory=list)
    recorded: int = 0
    forgotten: int = 0
    dry_run: bool = False


def repair_index(
    repo: Repository, dry_run: bool = False, progress: RepairProgress | None = None
) -> IndexRepairReport:
    session = None if dry_run else WriteSession(repo, dedup=False)
    try:
        report = IndexRepairReport()
        old_keys = [info.key for info in repo.backend.list(formats.INDEX_PREFIX)]
        packs = {_pack_id(i.key): i.size_bytes for i in repo.backend.list(formats.PACKS_PREFIX)}
        report.packs, report.old_index_objects = len(packs), len(old_keys)
        entries = _entries_from_packs(repo, packs, report, progress)
        unreadable = {bytes.fromhex(p) for p in report.unreadable_packs}
        entries += _old_entries(repo, old_keys, set(packs), unreadable, report)
        count = sum(len(part) for part in entries)
        report.index_objects_written = -(-count // INDEX_ENTRIES_PER_OBJECT)
        if not dry_run:
            written = write_index_objects(repo, entries)
            report.index_objects_written = len(written)
            for key in set(old_keys) - set(written):
                repo.backend.delete(key)
            repo.drop_cached_index()
    finally:
        if session is not None:
            session.close()
    return report


def _pack_id(key: str) -> bytes:
    return bytes.fromhex(key.rsplit("/", 1)[1])


def _entries_from_packs(
    repo: Repository,
    packs: dict[bytes, int],
    report: IndexRepairReport,
    progress: RepairProgress | None,
) -> list[IndexEntries]:
    """One part of rows per readable pack, in pack id order."""
    entries: list[IndexEntries] = []
    total, done = sum(packs.values()), 0
    with ThreadPoolExecutor(repo.backend.properties().parallelism) as pool:
        ordered = sorted(packs.items())
        for (pack_id, size), result in zip(
            ordered, pool.map(lambda item: _read_pack_trailer(repo, *item), ordered), strict=True
        ):
            done += size
            if progress is not None:
                progress(done, total)
            if isinstance(result, str):
                report.unreadable_packs[pack_id.hex()] = result
                continue
            report.packs_indexed += 1
            report.blobs_indexed += len(result)
            entries.append(
                IndexEntries.from_items((e.chunk_id, _location(pack_id, e)) for e in result)
            )
    return entries


def _read_pack_trailer(repo: Repository, pack_id: bytes, size: int) -> list[PackEntry] | str:
    """The pack's entries, or why they cannot be read."""
    key = formats.pack_key(pack_id)
    try:
        footer = repo.backend.get(key, size - formats.PACK_FOOTER.size, formats.PACK_FOOTER.size)
        tail_len = trailer_tail_length(size, bytes(footer))
        tail = repo.backend.get(key, size - tail_len, tail_len)
        return read_trailer_from_tail(bytes(tail), size, repo.codec)
    except ObjectNotFound:
        return "deleted while being read"
    except E3Error as exc:
        return str(exc)


def _old_entries(
    repo: Repository,
    keys: list[str],
    stored: set[bytes],
    unreadable: set[bytes],
    report: IndexRepairReport,
) -> list[IndexEntries]:
    """The old index's rows of packs whose trailer cannot be read (carried over); counts the
    rows of packs that are gone (dropped)."""
    kept: list[IndexEntries] = []

    def on_error(key: str, exc: E3Error) -> None:
        if not isinstance(exc, ObjectNotFound):
            report.unreadable_index_objects += 1

    workers = repo.backend.properties().parallelism
    for _, entries in read_index_objects(repo.backend, repo.codec, keys, workers, on_error):
        if entries is None:
            continue
        present = rows_in_packs(entries, stored)
        report.entries_of_missing_packs += int(np.count_nonzero(~present))
        carried = rows_in_packs(entries, unreadable)
        if carried.any():
            kept.append(IndexEntries(take_rows(entries.rows, carried), entries.pack_ids))
    return kept


def _location(pack_id: bytes, entry: PackEntry) -> ChunkLocation:
    return ChunkLocation(pack_id, entry.blob_type, entry.offset, entry.length, entry.raw_length)


# --- snapshots ---------------------------------------------------------------------------------


def repair_snapshots(
    repo: Repository,
    forget: bool = False,
    dry_run: bool = False,
    progress: RepairProgress | None = None,
) -> SnapshotRepairReport:
    session = None if dry_run else WriteSession(repo, dedup=False)
    try:
        report = SnapshotRepairReport(dry_run=dry_run)
        snapshots = repo.list_snapshots()
        report.snapshots_checked = len(snapshots)
        report.damaged = find_damaged_snapshots(repo, snapshots, progress)
        if dry_run or not report.damaged:
            return report
        problems = {d.snapshot_id: d.problems for d in report.damaged}
        report.recorded = len(
            verification.record_results(repo, sorted(problems), problems, SCOPE_REPAIR)
        )
        if forget:
            by_id = {s.id: s for s in snapshots}
            for damage in report.damaged:
                # Their data is gone: the tombstone must not keep them as prune roots.
                forget_snapshot(repo, by_id[damage.snapshot_id], time.time, protect=False)
                report.forgotten += 1
    finally:
        if session is not None:
            session.close()
    return report


def find_damaged_snapshots(
    repo: Repository, snapshots: list[Snapshot], progress: RepairProgress | None = None
) -> list[SnapshotDamage]:
    """Snapshots with a page or chunk that is in no index object or whose pack is gone."""
    index = repo.read_index_view().index
    packs = {_pack_id(info.key) for info in repo.backend.list(formats.PACKS_PREFIX)}
    stored = np.array([p in packs for p in index.pack_ids()] or [False], dtype=bool)
    pages: dict[bytes, str] = {}  # page id -> problem ('' when whole); pages dedupe
    total = sum(d.size_bytes for s in snapshots for d in s.disks)
    done = 0
    damaged = []
    for snapshot in snapshots:
        problems = []
        for disk in snapshot.disks:
            for page_hex in disk.pages:
                page_id = bytes.fromhex(page_hex)
                if page_id not in pages:
                    pages[page_id] = _page_problem(repo, index, stored, page_id)
                if pages[page_id]:
                    problems.append(f"disk {disk.name}: {pages[page_id]}")
            done += disk.size_bytes
            if progress is not None:
                progress(done, total)
        if problems:
            damaged.append(SnapshotDamage(snapshot.id, snapshot.source_name, snapshot.time,
                                          problems[: verification.MAX_PROBLEMS_KEPT]))  # fmt: skip
    return damaged


def _page_problem(
    repo: Repository, index: ChunkIndex, stored: npt.NDArray[np.bool_], page_id: bytes
) -> str:
    """'' if the page and every chunk it names are indexed in stored packs, else what is not.
    `stored[n]`: whether the index's pack number n is stored."""
    located = index.locate_many(page_id)
    loc = located.get(0)
    if loc is None or not stored[int(located.rows["pack"][0])]:
        where = "in no index object" if loc is None else f"in missing pack {loc.pack_id.hex()[:16]}"
        return f"index page {page_id.hex()[:16]} is {where}"
    try:
        page = repo.decode_chunk(
            repo.read_pack_range(loc.pack_id, loc.offset, loc.length), page_id, loc
        )
        located = index.locate_many(page)
    except (IntegrityError, ValueError) as exc:
        return f"index page {page_id.hex()[:16]} is unreadable: {exc}"
    named = np.frombuffer(page, dtype=np.uint8).reshape(-1, formats.ID_BYTES).any(axis=1)
    unindexed = int(np.count_nonzero(named & ~located.found))
    gone = int(np.count_nonzero(located.found & ~stored[located.rows["pack"]]))
    if not unindexed and not gone:
        return ""
    return (
        f"index page {page_id.hex()[:16]}: {unindexed} chunk(s) in no index object, "
        f"{gone} in missing packs"
    )
