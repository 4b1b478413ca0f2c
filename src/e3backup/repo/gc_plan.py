"""Prune's plan: what is live, which packs leave the index, which get repacked (no writes here).

Roots are the snapshots plus the manifests of snapshot tombstones younger than the grace period;
everything a root's pages name is live. A chunk referenced by a root but missing from the index
stops prune: the repository is damaged and `check` must look first.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from e3backup.core.errors import IntegrityError, ObjectNotFound, SnapshotNotFound
from e3backup.repo import formats
from e3backup.repo.chunk_index import ChunkIndex, ChunkLocation
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
    by_pack, lookup = _load_index(repo, plan)
    plan.lookup = lookup
    referenced = _referenced(repo, roots, lookup)
    plan.live_chunks = len(referenced)
    plan.stored_packs = {
        _pack_id(info.key): info.size_bytes for info in repo.backend.list(formats.PACKS_PREFIX)
    }
    _classify(plan, by_pack, referenced, max_repack_ratio, pending)
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


def _load_index(repo: Repository, plan: PrunePlan) -> tuple[dict[bytes, list[Entry]], ChunkIndex]:
    keys = [info.key for info in repo.backend.list(formats.INDEX_PREFIX)]
    by_pack: dict[bytes, list[Entry]] = {}
    lookup = ChunkIndex()

    def read(key: str) -> tuple[str, list[Entry]]:
        try:
            return key, repo.read_index_object(key)
        except ObjectNotFound:  # superseded by a concurrent prune; its survivors are elsewhere
            return key, []

    with ThreadPoolExecutor(repo.backend.properties().parallelism) as pool:
        for key, entries in pool.map(read, keys):
            if not entries:
                continue
            lookup.add_many(entries)
            packs = plan.packs_by_index_key.setdefault(key, set())
            for chunk_id, loc in entries:
                packs.add(loc.pack_id)
                by_pack.setdefault(loc.pack_id, []).append((chunk_id, loc))
    plan.indexed_packs = set(by_pack)
    return by_pack, lookup


def _referenced(repo: Repository, roots: list[Snapshot], lookup: ChunkIndex) -> set[bytes]:
    referenced: set[bytes] = set()
    for snapshot in roots:
        for disk in snapshot.disks:
            for page_hex in disk.pages:
                page_id = bytes.fromhex(page_hex)
                if page_id in referenced:
                    continue  # pages dedupe across snapshots: read each once
                referenced.add(page_id)
                page = _read(repo, lookup, page_id, snapshot)
                for pos in range(0, len(page), formats.ID_BYTES):
                    referenced.add(page[pos : pos + formats.ID_BYTES])
    referenced.discard(formats.ZERO_ID)
    missing = sum(1 for cid in referenced if cid not in lookup)
    if missing:
        raise IntegrityError(
            f"{missing} referenced chunk(s) are not in the index; prune stopped without "
            "deleting anything (run 'check')"
        )
    return referenced


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
    by_pack: dict[bytes, list[Entry]],
    referenced: set[bytes],
    max_repack_ratio: float,
    pending: set[bytes],
) -> None:
    kept_chunks: set[bytes] = set()
    mixed: list[tuple[bytes, list[Entry]]] = []
    for pack_id, entries in by_pack.items():
        live = [(cid, loc) for cid, loc in entries if cid in referenced]
        if not live:
            plan.unindex.add(pack_id)
            continue
        live_bytes = sum(loc.length for _, loc in live)
        total_bytes = sum(loc.length for _, loc in entries)
        if live_bytes < total_bytes and live_bytes <= max_repack_ratio * total_bytes:
            mixed.append((pack_id, live))
        else:
            kept_chunks.update(cid for cid, _ in live)
    for pack_id, live in mixed:
        copies: list[Entry] = []
        for chunk_id, loc in live:
            if chunk_id not in kept_chunks:  # a duplicate in a kept pack needs no copy
                kept_chunks.add(chunk_id)
                copies.append((chunk_id, loc))
        plan.repack[pack_id] = copies
        plan.unindex.add(pack_id)
    orphans = set(plan.stored_packs) - plan.indexed_packs - pending
    plan.unindex |= orphans
