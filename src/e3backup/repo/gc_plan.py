"""Prune's plan: what is live, which packs leave the index, which get repacked (no writes here).

Roots are the snapshots plus the manifests of snapshot tombstones younger than the grace period;
everything a root's pages name is live. A chunk referenced by a root but missing from the index
stops prune: the repository is damaged and `check` must look first.

Memory stays a few dozen bytes per chunk: the index is one ChunkIndex holding every entry (copies
included), liveness is a bitmap over its rows, and the per-pack sums are numpy reductions; only
the entries to repack become Python objects.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from e3backup.core.errors import IntegrityError, SnapshotNotFound
from e3backup.repo import formats
from e3backup.repo.chunk_index import ChunkIndex, ChunkLocation, IndexEntries
from e3backup.repo.index_file import read_index_objects
from e3backup.repo.index_rows import location
from e3backup.repo.manifest import Snapshot
from e3backup.repo.repository import Repository
from e3backup.repo.tombstones import SnapshotTombstone, read_tombstones

log = logging.getLogger(__name__)

Entry = tuple[bytes, ChunkLocation]


@dataclass
class PrunePlan:
    snapshot_count: int = 0
    forgotten_but_present: list[str] = field(default_factory=list)
    stored_packs: dict[bytes, int] = field(default_factory=dict)  # pack id -> size
    indexed_packs: set[bytes] = field(default_factory=set)
    packs_by_index_key: dict[str, set[bytes]] = field(default_factory=dict)
    unindex: set[bytes] = field(default_factory=set)  # packs that leave the index (step 1)
    repack: dict[bytes, list[Entry]] = field(default_factory=dict)  # live entries to copy
    live_chunks: int = 0
    seen_snapshot_ids: set[str] = field(default_factory=set)
    lookup: ChunkIndex = field(default_factory=ChunkIndex)  # the index as listed


def plan_prune(
    repo: Repository,
    now: float,
    grace_s: float,
    snap_tombs: list[SnapshotTombstone],
    max_repack_ratio: float,
    pending: set[bytes],
) -> PrunePlan:
    plan = PrunePlan()
    roots = _roots(repo, now, grace_s, snap_tombs, plan)
    lookup = _load_index(repo, plan)
    plan.lookup = lookup
    live = _referenced(repo, roots, lookup)
    plan.live_chunks = int(np.count_nonzero(live))
    plan.stored_packs = {
        _pack_id(info.key): info.size_bytes for info in repo.backend.list(formats.PACKS_PREFIX)
    }
    _classify(plan, lookup, live, max_repack_ratio, pending)
    return plan


def _pack_id(key: str) -> bytes:
    return bytes.fromhex(key.rsplit("/", 1)[1])


def _roots(
    repo: Repository,
    now: float,
    grace_s: float,
    snap_tombs: list[SnapshotTombstone],
    plan: PrunePlan,
) -> list[Snapshot]:
    forgotten = {t.snapshot.id for t in snap_tombs}
    roots = [t.snapshot for t in snap_tombs if now - t.time_unix < grace_s]
    for snapshot_id in repo.snapshot_ids():
        plan.seen_snapshot_ids.add(snapshot_id)
        if snapshot_id in forgotten:
            plan.forgotten_but_present.append(snapshot_id)
            continue
        try:
            roots.append(repo.load_snapshot(snapshot_id))
            plan.snapshot_count += 1
        except SnapshotNotFound:
            # Forgotten while we listed: its tombstone was written first, use it as a root.
            tombs, _ = read_tombstones(repo)
            roots.extend(t.snapshot for t in tombs if t.snapshot.id == snapshot_id)
    return roots


def _load_index(repo: Repository, plan: PrunePlan) -> ChunkIndex:
    """Every entry of every index object, copies of a chunk in several packs included."""
    keys = [info.key for info in repo.backend.list(formats.INDEX_PREFIX)]
    workers = repo.backend.properties().parallelism

    def parts() -> Iterator[IndexEntries]:
        # A missing object was superseded by a concurrent prune; its survivors are elsewhere.
        for key, entries in read_index_objects(repo.backend, repo.codec, keys, workers):
            if entries is not None and len(entries):
                plan.packs_by_index_key[key] = set(entries.pack_ids)
                yield entries

    lookup = ChunkIndex.from_entries(parts())
    plan.indexed_packs = set(lookup.pack_ids())
    return lookup


def _referenced(
    repo: Repository, roots: list[Snapshot], lookup: ChunkIndex
) -> npt.NDArray[np.bool_]:
    """A bitmap over the index rows: True for the row of every page and chunk a root uses."""
    live = np.zeros(lookup.row_count, dtype=bool)
    missing: set[bytes] = set()
    for snapshot in roots:
        for disk in snapshot.disks:
            for page_hex in disk.pages:
                page_id = bytes.fromhex(page_hex)
                page_row = int(lookup.find_rows(page_id)[0])
                if page_row >= 0 and live[page_row]:
                    continue  # pages dedupe across snapshots: read each once
                page = _read(repo, lookup, page_id, snapshot)
                live[page_row] = True
                if len(page) % formats.ID_BYTES:
                    raise IntegrityError(f"index page {page_hex[:16]} has a partial entry")
                ids = np.frombuffer(page, dtype=np.uint8).reshape(-1, formats.ID_BYTES)
                rows = lookup.find_rows(page)
                live[rows[rows >= 0]] = True
                absent = (rows < 0) & ids.any(axis=1)  # the all-zero id is not stored
                missing.update(ids[i].tobytes() for i in np.flatnonzero(absent))
    if missing:
        raise IntegrityError(
            f"{len(missing)} referenced chunk(s) are not in the index; prune stopped without "
            "deleting anything (run 'check')"
        )
    return live


def _read(repo: Repository, lookup: ChunkIndex, chunk_id: bytes, snapshot: Snapshot) -> bytes:
    loc = lookup.get(chunk_id)
    if loc is None:
        raise IntegrityError(
            f"snapshot {snapshot.id[:12]}: index page {chunk_id.hex()[:16]} is not in the index; "
            "prune stopped without deleting anything (run 'check')"
        )
    blob = repo.read_pack_range(loc.pack_id, loc.offset, loc.length)
    return repo.decode_chunk(blob, chunk_id, loc)


def _classify(
    plan: PrunePlan,
    lookup: ChunkIndex,
    live: npt.NDArray[np.bool_],
    max_repack_ratio: float,
    pending: set[bytes],
) -> None:
    """Per pack, from arrays over every row: no live row → unindex; mostly garbage → repack its
    live rows (a chunk once, and not at all if a kept pack holds a copy); otherwise keep."""
    pack_ids = lookup.pack_ids()
    canon = lookup.canonical_rows()
    row_live = live[canon]
    packs = lookup.column("pack").astype(np.int64)
    lengths = lookup.column("length").astype(np.float64)
    count = len(pack_ids)
    live_rows = np.bincount(packs, weights=row_live, minlength=count)
    live_bytes = np.bincount(packs, weights=lengths * row_live, minlength=count)
    total_bytes = np.bincount(packs, weights=lengths, minlength=count)
    dead = live_rows == 0
    mixed = ~dead & (live_bytes < total_bytes) & (live_bytes <= max_repack_ratio * total_bytes)
    plan.unindex.update(pack_ids[n] for n in np.flatnonzero(dead | mixed))
    kept = np.zeros(len(live), dtype=bool)
    kept[canon[row_live & ~dead[packs] & ~mixed[packs]]] = True
    # Live rows of mixed packs whose chunk no kept pack holds, in pack then row order; the
    # first row of each chunk is copied.
    candidates = np.flatnonzero(row_live & mixed[packs] & ~kept[canon])
    candidates = candidates[np.argsort(packs[candidates], kind="stable")]
    _, first = np.unique(canon[candidates], return_index=True)
    copies = np.sort(candidates[first])
    plan.repack = {pack_ids[n]: [] for n in np.flatnonzero(mixed)}
    for record in lookup.records(copies):
        plan.repack[pack_ids[int(record["pack"])]].append(
            (record["id"].tobytes(), location(record, pack_ids))
        )
    orphans = set(plan.stored_packs) - plan.indexed_packs - pending
    plan.unindex |= orphans
