"""Prune: delete and repack data no snapshot needs, without any lock that blocks backups.

Safety rule
-----------
Prune removes data in two steps separated by at least the grace period G:

1. *Unindex* (run k, finished at time T): packs with no live chunk, packs that are mostly
   garbage (after their live blobs were copied into new packs and indexed), and packs no index
   mentions are taken out of the index: new index objects with the surviving entries are
   written, then the superseded ones deleted, then `tombstones/packs-<id>` records the packs
   and T. Nothing is deleted from storage yet.
2. *Delete* (a run at time ≥ T + G): a pack of such a tombstone is deleted only if
   (a) no write session that started before T (+ a clock-skew allowance) is still live, and
   (b) no index object, read after the sessions were listed, mentions the pack.

"Live" data (never unindexed) is everything referenced by a snapshot, or by a snapshot whose
tombstone (written by `forget` before it deletes the manifest) is younger than G. A session is
live while its heartbeat is younger than G; prune deletes the objects of older ones, and a writer
whose session object vanished refuses to commit. Listing order in a run: sessions, tombstones,
snapshots, index, packs.

Why a backup W cannot commit a snapshot that references deleted data:
- W registers its session before it loads the index and heartbeats while it runs, so W's view
  of the index is younger than its session. If W may use a chunk x unindexed at T, W's session
  started before T, and while W is live step 2 (a) keeps x's pack. This holds per session, not
  per process: a repository object that outlives a session (a VM job, an agent) brings its
  index up to date when the next session has registered (`Repository.refresh_index`: it adds
  new index objects and rebuilds from the current ones if one it held is gone), and the
  parent is chosen and verified after registering too. A session's new chunks become dedup
  targets for others only once their index object is stored; an aborted session's unindexed
  uploads never do.
- x may leave the index while W runs: because W deduplicated against it, or because W indexed it
  itself and prune listed the snapshots before W's manifest existed. Both sides write, then
  look (Dekker-style): W writes its manifest, *then* checks whether an index object it loaded or
  wrote is gone and, if so, re-indexes every chunk the manifest references that the current
  index lacks (their packs exist: W is still live); prune unindexes, *then* lists snapshots again
  and re-indexes the packs of every snapshot it had not seen. Whichever comes second sees the
  other, and step 2 (b) then keeps those packs. (For a moment between prune's unindexing and
  the re-indexing, a reader of W's new snapshot can get "not in the index"; never wrong data.)
- Chunks inherited from the parent snapshot: the parent was live or tombstoned less than G ago
  when W read it (milliseconds before its session), so its chunks were indexed when W loaded
  the index, and the previous point applies.
- Packs W uploaded but has not indexed yet look unindexed to prune; W's session started before
  they were uploaded, so step 2 (a) keeps them until W indexed them, and (b) afterwards.
Readers that loaded the index before T (restore, check) find every pack they need for G.
Assumptions: hosts' clocks agree to well within G; no process stalls longer than G between a
heartbeat and its next write (a stalled writer finds its session gone and fails the backup);
listings are strongly consistent (S3 since 2020, SeaweedFS, local files).
A grace below `min_safe_grace_s()` (twice the session heartbeat plus the clock-skew allowance)
breaks this: a live backup's heartbeat can be that old, so prune takes it for dead, removes its
session object and deletes what it relies on. The CLI refuses such a grace without
`--unsafe-grace`. With G = 0 every running backup is taken for dead at once: it fails at commit
("session expired"), and a restore or check that loaded the index before the prune finds packs
deleted under it (tests/integration/test_gc_concurrency.py, tests/unit/repo/test_gc_overlap.py).

Which operations may overlap
----------------------------
| pair            | allowed | why it is safe                                                   |
|-----------------|---------|------------------------------------------------------------------|
| backup / backup | yes     | content-addressed, idempotent puts; duplicate entries are benign |
| backup / forget | yes     | forget only deletes a manifest, after its tombstone; the tombstone|
|                 |         | keeps a chosen parent's data live for G                          |
| backup / prune  | yes     | the safety rule above (sessions, two steps, commit re-check)     |
| prune / prune   | yes     | index rewrites only drop entries of packs both see as garbage;   |
|                 |         | a repacking prune is a write session, so it defers the other's   |
|                 |         | step 2; deletes are idempotent                                   |
| check / prune   | yes     | packs leave the index G before they leave storage; an index      |
|                 |         | object superseded mid-check may be reported as vanished (rerun)  |
| restore / prune | yes     | as check: a restore shorter than G never misses a pack; a longer |
|                 |         | one fails with "pack missing", never with wrong data             |
Tests: tests/unit/repo/test_gc_overlap.py has one test per row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from e3backup.core.errors import ObjectNotFound, SnapshotNotFound, UsageError
from e3backup.repo import formats, verification
from e3backup.repo.chunk_index import ChunkIndex, IndexEntries
from e3backup.repo.gc_plan import PrunePlan, plan_prune
from e3backup.repo.index_file import IndexObjectWriter, read_index_objects
from e3backup.repo.index_rows import rows_in_packs, take_rows
from e3backup.repo.repository import Repository
from e3backup.repo.session import HEARTBEAT_ENV, WriteSession, heartbeat_interval_s
from e3backup.repo.tombstones import (
    PacksTombstone,
    SessionRecord,
    read_sessions,
    read_tombstones,
    write_packs_tombstone,
)

DEFAULT_GRACE_S = 24 * 3600.0
DEFAULT_REPACK_RATIO = 0.5
MAX_CLOCK_SKEW_S = 60.0
INDEX_ENTRIES_PER_OBJECT = 65536


def min_safe_grace_s() -> float:
    """The smallest grace period that never takes a heartbeating backup for dead."""
    return 2 * heartbeat_interval_s() + MAX_CLOCK_SKEW_S


def check_grace(grace_s: float, unsafe: bool = False) -> None:
    """Refuse a grace period below the safe minimum unless the caller insists."""
    minimum = min_safe_grace_s()
    if grace_s >= minimum or unsafe:
        return
    raise UsageError(
        f"a grace period of {format_duration(grace_s)} is below the safe minimum of "
        f"{format_duration(minimum)}: running backups refresh their session every "
        f"{format_duration(heartbeat_interval_s())} ({HEARTBEAT_ENV}), and prune must not take "
        f"one for dead (minimum: 2 heartbeats + {format_duration(MAX_CLOCK_SKEW_S)} for clock "
        "skew); pass --unsafe-grace only when no backup, restore or check can be running"
    )


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass
class PruneOptions:
    grace_s: float = DEFAULT_GRACE_S
    max_repack_ratio: float = DEFAULT_REPACK_RATIO  # repack packs whose live share is at most this
    dry_run: bool = False
    clock: Callable[[], float] = time.time


@dataclass
class PruneReport:
    snapshots: int = 0
    tombstoned_snapshots: int = 0
    live_sessions: int = 0
    stale_sessions_removed: int = 0
    packs_total: int = 0
    packs_unindexed: int = 0
    packs_repacked: int = 0
    blobs_copied: int = 0
    packs_deleted: int = 0
    bytes_deleted: int = 0
    packs_waiting: int = 0  # unindexed, waiting for the grace period or a session
    index_objects_rewritten: int = 0
    notes: list[str] = field(default_factory=list)


def prune(repo: Repository, options: PruneOptions | None = None) -> PruneReport:
    options = options or PruneOptions()
    grace = max(0.0, options.grace_s)
    now = options.clock()
    report = PruneReport()

    sessions = read_sessions(repo)  # first: see the safety rule
    live = [s for s in sessions if now - s.heartbeat_unix < grace]
    report.live_sessions = len(live)
    snap_tombs, pack_tombs = read_tombstones(repo)
    pending = {p for t in pack_tombs for p in t.pack_ids}
    plan = plan_prune(repo, now, grace, snap_tombs, options.max_repack_ratio, pending)
    report.snapshots = plan.snapshot_count
    report.tombstoned_snapshots = len(snap_tombs)
    report.packs_total = len(plan.stored_packs)
    report.packs_unindexed = len(plan.unindex)
    report.packs_repacked = len(plan.repack)
    if options.dry_run:
        report.packs_waiting = len(pending | plan.unindex)
        return report

    for session in sessions:
        if session not in live:
            repo.backend.delete(session.key)
            report.stale_sessions_removed += 1
    for snapshot_id in plan.forgotten_but_present:  # finish a forget that crashed midway
        repo.backend.delete(formats.SNAPSHOTS_PREFIX + snapshot_id)
    _repack(repo, plan, report)
    removed = _rewrite_index(repo, plan, report)
    _reindex_for_new_snapshots(repo, plan, removed, report)
    if plan.unindex:
        write_packs_tombstone(repo, sorted(plan.unindex), options.clock())
        report.packs_waiting += len(plan.unindex)
    _sweep(repo, pack_tombs, live, now, grace, plan.indexed_packs - plan.unindex, report)
    for tomb in snap_tombs:
        if now - tomb.time_unix >= grace:
            repo.backend.delete(tomb.key)
    return report


def _repack(repo: Repository, plan: PrunePlan, report: PruneReport) -> None:
    """Copy the live blobs of mostly-garbage packs into new packs. Prune writes through a write
    session, so the copies are indexed before the old packs leave the index, and a concurrent
    prune sees a running writer."""
    if not any(plan.repack.values()):
        return
    session = WriteSession(repo, dedup=False)
    try:
        for pack_id, entries in sorted(plan.repack.items()):
            if not entries:
                continue
            data = repo.backend.get(formats.pack_key(pack_id))
            for chunk_id, loc in entries:
                blob = data[loc.offset : loc.offset + loc.length]
                repo.decode_chunk(blob, chunk_id, loc)  # never copy damage into a new pack
                session.add_blob(loc.blob_type, chunk_id, blob, loc.raw_length)
                report.blobs_copied += 1
        session.flush()
    except BaseException:
        session.abort()
        raise
    session.close()


def _rewrite_index(repo: Repository, plan: PrunePlan, report: PruneReport) -> list[IndexEntries]:
    """New index objects with the survivors of every object that mentions an unindexed pack,
    written before the superseded objects are deleted. Rows, not Python entries: memory is one
    object's rows plus the removed rows (49 bytes each). Returns the removed rows."""
    affected = [key for key, packs in plan.packs_by_index_key.items() if packs & plan.unindex]
    removed: list[IndexEntries] = []
    writer = IndexObjectWriter(repo.backend, repo.codec, INDEX_ENTRIES_PER_OBJECT)
    workers = repo.backend.properties().parallelism
    for _, entries in read_index_objects(repo.backend, repo.codec, affected, workers):
        if entries is None:  # a concurrent prune superseded it already
            continue
        drop = rows_in_packs(entries, plan.unindex)
        removed.append(IndexEntries(take_rows(entries.rows, drop), entries.pack_ids))
        writer.add(IndexEntries(take_rows(entries.rows, ~drop), entries.pack_ids))
    writer.close()
    for key in affected:
        repo.backend.delete(key)
    report.index_objects_rewritten = len(affected)
    return [part for part in removed if len(part)]


def write_index_objects(repo: Repository, entries: Iterable[IndexEntries]) -> list[str]:
    """Store `entries` as index objects of at most INDEX_ENTRIES_PER_OBJECT; returns their keys."""
    writer = IndexObjectWriter(repo.backend, repo.codec, INDEX_ENTRIES_PER_OBJECT)
    for part in entries:
        writer.add(part)
    return writer.close()


def _reindex_for_new_snapshots(
    repo: Repository, plan: PrunePlan, removed: list[IndexEntries], report: PruneReport
) -> None:
    """Snapshots committed since the roots were listed may use what was just unindexed: list
    them again (after the unindexing) and put the packs they use back into the index. Together
    with the writer's check after its commit, one of the two always sees the other."""
    if not removed:
        return
    new_ids = set(repo.snapshot_ids()) - plan.seen_snapshot_ids
    if not new_ids:
        return
    removed_at = ChunkIndex.from_entries(removed)
    revive: set[bytes] = set()
    current: list[ChunkIndex] = []
    for snapshot_id in sorted(new_ids):
        try:
            snapshot = repo.load_snapshot(snapshot_id)
        except SnapshotNotFound:
            continue
        for disk in snapshot.disks:
            for page_hex in disk.pages:
                page_id = bytes.fromhex(page_hex)
                loc = removed_at.get(page_id) or plan.lookup.get(page_id)
                if loc is None:  # indexed after our listing
                    if not current:
                        current.append(repo.read_index_view().index)
                    loc = current[0].get(page_id)
                if loc is None:
                    continue
                page = repo.decode_chunk(
                    repo.read_pack_range(loc.pack_id, loc.offset, loc.length), page_id, loc
                )
                revive.update(_packs_of(removed_at, page_id + page))
    if revive:
        write_index_objects(
            repo, (IndexEntries(take_rows(p.rows, rows_in_packs(p, revive)), p.pack_ids)
                   for p in removed)
        )  # fmt: skip
        plan.unindex -= revive
        report.packs_unindexed = len(plan.unindex)
        report.notes.append(f"{len(revive)} pack(s) kept for snapshots committed during prune")


def _packs_of(index: ChunkIndex, ids: bytes) -> set[bytes]:
    """The packs `index` places the given concatenated ids in (one vectorized lookup)."""
    located = index.locate_many(ids)
    numbers = np.unique(located.rows["pack"][located.found])
    return {located.pack_ids[int(n)] for n in numbers}


def _sweep(
    repo: Repository,
    pack_tombs: list[PacksTombstone],
    live: list[SessionRecord],
    now: float,
    grace: float,
    indexed_now: set[bytes],
    report: PruneReport,
) -> None:
    """Step 2: delete the packs of tombstones older than G that no running backup may need."""
    skew = min(grace, MAX_CLOCK_SKEW_S)
    deleted: list[bytes] = []
    for tomb in pack_tombs:
        if now - tomb.time_unix < grace:
            report.packs_waiting += len(tomb.pack_ids)
            continue
        blockers = [s for s in live if s.started_unix < tomb.time_unix + skew]
        if blockers:
            report.packs_waiting += len(tomb.pack_ids)
            report.notes.append(
                f"{len(tomb.pack_ids)} pack(s) wait for {len(blockers)} running backup(s)"
            )
            continue
        for pack_id in tomb.pack_ids:
            if pack_id in indexed_now:
                continue  # indexed again by a backup that had deduplicated against it
            key = formats.pack_key(pack_id)
            try:
                size = repo.backend.stat(key).size_bytes
            except ObjectNotFound:  # deleted by a concurrent prune
                continue
            repo.backend.delete(key)
            deleted.append(pack_id)
            report.packs_deleted += 1
            report.bytes_deleted += size
        repo.backend.delete(tomb.key)
    verification.forget_damaged_packs(repo, deleted)
