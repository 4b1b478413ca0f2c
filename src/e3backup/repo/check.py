"""Repository check: structure always, and with `read_data` every stored byte.

Structure: every index object opens, every indexed pack exists and is long enough, every
snapshot opens and every page and chunk it references is indexed. Read-data: every pack is
read, its trailer must agree with the index, and every blob must decrypt and hash to its id.
Damage is reported with the snapshots it affects; leftovers of interrupted backups (packs no
index mentions, stale sessions) are reported as notes, not errors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from e3backup.core.errors import E3Error
from e3backup.repo import formats
from e3backup.repo.chunk_index import ChunkLocation
from e3backup.repo.pack import read_trailer
from e3backup.repo.repository import Repository

PackEntries = dict[bytes, list[tuple[bytes, ChunkLocation]]]

log = logging.getLogger(__name__)


@dataclass
class CheckReport:
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    damaged_snapshots: set[str] = field(default_factory=set)
    snapshots_checked: int = 0
    packs_checked: int = 0
    chunks_verified: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def check_repository(
    repo: Repository, read_data: bool = False, on_pack: Callable[[int, int], None] | None = None
) -> CheckReport:
    report = CheckReport()
    by_pack = _load_index(repo, report)
    bad_chunks = _check_packs(repo, by_pack, report, read_data, on_pack)
    _check_snapshots(repo, bad_chunks, report)
    stale = sum(1 for _ in repo.backend.list(formats.SESSIONS_PREFIX))
    if stale:
        report.notes.append(f"{stale} write session(s) registered (running or interrupted backups)")
    return report


def _load_index(
    repo: Repository, report: CheckReport
) -> dict[bytes, list[tuple[bytes, ChunkLocation]]]:
    by_pack: dict[bytes, list[tuple[bytes, ChunkLocation]]] = {}
    for info in repo.backend.list(formats.INDEX_PREFIX):
        try:
            entries = repo.read_index_object(info.key)
        except E3Error as exc:
            report.errors.append(f"index object {info.key} is unreadable: {exc}")
            continue
        for chunk_id, loc in entries:
            by_pack.setdefault(loc.pack_id, []).append((chunk_id, loc))
    return by_pack


def _check_packs(
    repo: Repository,
    by_pack: PackEntries,
    report: CheckReport,
    read_data: bool,
    on_pack: Callable[[int, int], None] | None,
) -> set[bytes]:
    """Returns the ids of chunks that cannot be read intact."""
    sizes = {info.key: info.size_bytes for info in repo.backend.list(formats.PACKS_PREFIX)}
    indexed_keys = {formats.pack_key(pack_id) for pack_id in by_pack}
    unindexed = len(set(sizes) - indexed_keys)
    if unindexed:
        report.notes.append(f"{unindexed} pack(s) not in any index (left by interrupted backups)")
    bad: set[bytes] = set()

    def check_one(item: tuple[bytes, list[tuple[bytes, ChunkLocation]]]) -> list[str]:
        pack_id, entries = item
        key = formats.pack_key(pack_id)
        if key not in sizes:
            bad.update(cid for cid, _ in entries)
            return [f"pack {pack_id.hex()[:16]} is missing ({len(entries)} chunks lost)"]
        end = max(loc.offset + loc.length for _, loc in entries)
        if end > sizes[key]:
            bad.update(cid for cid, _ in entries)
            return [f"pack {pack_id.hex()[:16]} is truncated ({sizes[key]} < {end} bytes)"]
        return _read_pack(repo, pack_id, entries, bad) if read_data else []

    done = 0
    with ThreadPoolExecutor(repo.backend.properties().parallelism) as pool:
        for problems in pool.map(check_one, by_pack.items()):
            report.errors.extend(problems)
            done += 1
            if on_pack is not None:
                on_pack(done, len(by_pack))
    report.packs_checked = len(by_pack)
    if read_data:
        report.chunks_verified = sum(len(v) for v in by_pack.values()) - len(bad)
    return bad


def _read_pack(
    repo: Repository,
    pack_id: bytes,
    entries: list[tuple[bytes, ChunkLocation]],
    bad: set[bytes],
) -> list[str]:
    problems = []
    name = pack_id.hex()[:16]
    try:
        data = repo.backend.get(formats.pack_key(pack_id))
    except E3Error as exc:
        bad.update(cid for cid, _ in entries)
        return [f"pack {name} cannot be read: {exc}"]
    for chunk_id, loc in entries:
        try:
            repo.decode_chunk(memoryview(data)[loc.offset : loc.offset + loc.length], chunk_id, loc)
        except E3Error as exc:
            bad.add(chunk_id)
            problems.append(f"chunk {chunk_id.hex()[:16]} in pack {name}: {exc}")
    try:
        trailer = {(e.chunk_id, e.offset, e.length) for e in read_trailer(data, repo.codec)}
        indexed = {(cid, loc.offset, loc.length) for cid, loc in entries}
        if not indexed <= trailer:
            problems.append(f"pack {name}: trailer does not list every indexed chunk")
    except E3Error as exc:
        problems.append(f"pack {name}: trailer damaged ({exc}); its chunks are still readable")
    return problems


def _check_snapshots(repo: Repository, bad_chunks: set[bytes], report: CheckReport) -> None:
    for snapshot_id in repo.snapshot_ids():
        report.snapshots_checked += 1
        try:
            snapshot = repo.load_snapshot(snapshot_id)
            for disk in snapshot.disks:
                for page_hex in disk.pages:
                    if bytes.fromhex(page_hex) in bad_chunks:
                        raise E3Error(f"disk {disk.name}: index page {page_hex[:16]} is damaged")
                missing = damaged = 0
                for chunk_id in repo.disk_chunk_ids(disk):
                    if chunk_id == formats.ZERO_ID:
                        continue
                    if chunk_id in bad_chunks:
                        damaged += 1
                    elif chunk_id not in repo.index:
                        missing += 1
                if missing or damaged:
                    raise E3Error(
                        f"disk {disk.name}: {damaged} damaged and {missing} missing chunk(s)"
                    )
        except E3Error as exc:
            report.damaged_snapshots.add(snapshot_id)
            report.errors.append(f"snapshot {snapshot_id[:12]} is damaged: {exc}")
