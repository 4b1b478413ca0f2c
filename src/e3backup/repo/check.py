"""Repository check: structure always, and with `read_data` every stored byte.

Structure: every index object opens, every indexed pack exists and is long enough, every
snapshot opens and every page and chunk it references is indexed. Read-data: every pack is
read, its trailer must agree with the index, and every blob must decrypt and hash to its id.
Damage is reported with the snapshots it affects; leftovers of interrupted backups (packs no
index mentions, stale sessions) are reported as notes, not errors.

A large repository is verified gradually with a data subset: `n/t` reads part n of t (a pack is
in part `pack_id[0] % t + 1`, restic's rule, so t runs cover every pack exactly once and a rerun
reads the same packs), `N%` a random N % of the packs. The structure check is always complete.
With `record=True` the verdict for every snapshot is stored (repo/verification.py), so backups
never build on a snapshot found damaged.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from e3backup.core.errors import E3Error, IntegrityError, StorageError, UsageError
from e3backup.repo import formats, verification
from e3backup.repo.chunk_index import ChunkIndex, ChunkLocation
from e3backup.repo.index_file import read_index_objects
from e3backup.repo.index_rows import location
from e3backup.repo.manifest import DiskRecord
from e3backup.repo.pack import read_trailer
from e3backup.repo.repository import Repository

log = logging.getLogger(__name__)


_PART = re.compile(r"^(\d+)/(\d+)$")
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")


@dataclass(frozen=True)
class DataSubset:
    """Which packs a data check reads: part `n` of `t`, or a random `percent` of them."""

    part: tuple[int, int] | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str) -> DataSubset:
        """'n/t' (1 ≤ n ≤ t) or 'N%' (0 < N ≤ 100)."""
        text = text.strip()
        if match := _PART.match(text):
            n, t = int(match[1]), int(match[2])
            if not 1 <= n <= t:
                raise UsageError(f"data subset {text!r}: need 1 <= n <= t in n/t")
            return cls(part=(n, t))
        if match := _PERCENT.match(text):
            percent = float(match[1])
            if not 0 < percent <= 100:
                raise UsageError(f"data subset {text!r}: the percentage must be in (0, 100]")
            return cls(percent=percent)
        raise UsageError(f"data subset {text!r}: expected n/t (such as 2/5) or N% (such as 10%)")

    def describe(self) -> str:
        if self.part is not None:
            return f"{self.part[0]}/{self.part[1]}"
        return f"{self.percent:g}%"

    def select(self, pack_ids: list[bytes], rng: random.Random | None = None) -> set[bytes]:
        if self.part is not None:
            n, t = self.part
            return {p for p in pack_ids if p[0] % t == n - 1}
        assert self.percent is not None
        count = min(len(pack_ids), max(1, round(len(pack_ids) * self.percent / 100)))
        return set((rng or random.Random()).sample(sorted(pack_ids), count)) if pack_ids else set()


@dataclass
class CheckReport:
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    damaged_snapshots: set[str] = field(default_factory=set)
    snapshot_problems: dict[str, list[str]] = field(default_factory=dict)
    snapshots_checked: int = 0
    packs_checked: int = 0
    packs_read: int = 0
    chunks_verified: int = 0
    scope: str = "structure"
    records_written: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def check_repository(
    repo: Repository,
    read_data: bool = False,
    on_pack: Callable[[int, int], None] | None = None,
    subset: DataSubset | None = None,
    record: bool = False,
    rng: random.Random | None = None,
) -> CheckReport:
    """Check the repository; `subset` implies reading data. With `record`, store the verdicts."""
    read_data = read_data or subset is not None
    report = CheckReport()
    if read_data:
        report.scope = verification.SCOPE_FULL_DATA
        if subset is not None:
            report.scope += " " + subset.describe()
    table = _load_index(repo, report)
    indexed_packs = set(table.pack_ids)
    to_read: set[bytes] = set()
    if read_data:
        to_read = indexed_packs if subset is None else subset.select(table.pack_ids, rng)
    bad_blobs = _check_packs(repo, table, report, to_read, on_pack)
    del table  # the repository's own index serves the snapshot checks
    if record:
        try:
            verification.record_damaged_blobs(repo, bad_blobs, to_read, indexed_packs)
            repo.drop_cached_index()  # reload without the damaged entries (not for dedup)
        except StorageError as exc:
            report.notes.append(f"damaged blobs not recorded: {exc}")
    # A chunk is bad if the copy the index hands out is (another, intact copy may be indexed).
    bad_chunks: set[bytes] = set()
    for chunk_id, pack_id in bad_blobs:
        loc = repo.index.get(chunk_id)
        if loc is None or loc.pack_id == pack_id:
            bad_chunks.add(chunk_id)
    snapshot_ids = _check_snapshots(repo, bad_chunks, report)
    stale = sum(1 for _ in repo.backend.list(formats.SESSIONS_PREFIX))
    if stale:
        report.notes.append(f"{stale} write session(s) registered (running or interrupted backups)")
    if record:
        try:
            written = verification.record_results(
                repo, snapshot_ids, report.snapshot_problems, report.scope
            )
            report.records_written = len(written)
            _drop_orphan_records(repo, set(snapshot_ids))
        except StorageError as exc:  # read-only credentials: the check itself still counts
            report.notes.append(f"verification results not recorded: {exc}")
    return report


def _drop_orphan_records(repo: Repository, snapshot_ids: set[str]) -> None:
    for info in repo.backend.list(formats.VERIFY_PREFIX):
        if info.key.startswith(verification.DAMAGED_PREFIX):
            continue
        if info.key.removeprefix(formats.VERIFY_PREFIX) not in snapshot_ids:
            repo.backend.delete(info.key)


class _IndexTable:
    """Every entry of every readable index object (copies included), grouped by pack."""

    def __init__(self, index: ChunkIndex) -> None:
        self.index = index
        self.pack_ids = index.pack_ids()
        packs = index.column("pack")
        self._order = np.argsort(packs, kind="stable").astype(np.uint32)
        self._bounds = np.searchsorted(packs[self._order], np.arange(len(self.pack_ids) + 1))

    def rows(self, number: int) -> npt.NDArray[np.uint32]:
        return self._order[self._bounds[number] : self._bounds[number + 1]]

    def count(self, number: int) -> int:
        return int(self._bounds[number + 1] - self._bounds[number])

    def entries(self, number: int) -> list[tuple[bytes, ChunkLocation]]:
        records = self.index.records(self.rows(number).astype(np.int64))
        return [(r["id"].tobytes(), location(r, self.pack_ids)) for r in records]

    def pack_ends(self) -> npt.NDArray[np.int64]:
        """The end of the last blob of every pack."""
        ends: npt.NDArray[np.int64] = self.index.column("offset").astype(
            np.int64
        ) + self.index.column("length")
        if not len(ends):
            return ends
        maxima: npt.NDArray[np.int64] = np.maximum.reduceat(ends[self._order], self._bounds[:-1])
        return maxima


def _load_index(repo: Repository, report: CheckReport) -> _IndexTable:
    keys = [info.key for info in repo.backend.list(formats.INDEX_PREFIX)]
    problems: dict[str, E3Error] = {}

    def note(key: str, exc: E3Error) -> None:
        problems[key] = exc

    objects = read_index_objects(
        repo.backend, repo.codec, keys, repo.backend.properties().parallelism, note
    )
    table = _IndexTable(ChunkIndex.from_entries(e for _, e in objects if e is not None))
    for key in keys:
        if key in problems:
            report.errors.append(f"index object {key} is unreadable: {problems[key]}")
    return table


def _check_packs(
    repo: Repository,
    table: _IndexTable,
    report: CheckReport,
    to_read: set[bytes],
    on_pack: Callable[[int, int], None] | None,
) -> set[tuple[bytes, bytes]]:
    """Returns the (chunk id, pack id) pairs of blobs that cannot be read intact."""
    sizes = {info.key: info.size_bytes for info in repo.backend.list(formats.PACKS_PREFIX)}
    indexed_keys = {formats.pack_key(pack_id) for pack_id in table.pack_ids}
    unindexed = len(set(sizes) - indexed_keys)
    if unindexed:
        report.notes.append(f"{unindexed} pack(s) not in any index (left by interrupted backups)")
    bad: set[tuple[bytes, bytes]] = set()
    ends = table.pack_ends()

    def check_one(number: int) -> list[str]:
        pack_id = table.pack_ids[number]
        key = formats.pack_key(pack_id)
        if key not in sizes:
            bad.update((cid, pack_id) for cid, _ in table.entries(number))
            return [f"pack {pack_id.hex()[:16]} is missing ({table.count(number)} chunks lost)"]
        end = int(ends[number])
        if end > sizes[key]:
            bad.update((cid, pack_id) for cid, _ in table.entries(number))
            return [f"pack {pack_id.hex()[:16]} is truncated ({sizes[key]} < {end} bytes)"]
        if pack_id not in to_read:
            return []
        return _read_pack(repo, pack_id, table.entries(number), bad)

    total = len(table.pack_ids)
    with ThreadPoolExecutor(repo.backend.properties().parallelism) as pool:
        for done, problems in enumerate(pool.map(check_one, range(total)), start=1):
            report.errors.extend(problems)
            if on_pack is not None:
                on_pack(done, total)
    report.packs_checked = total
    report.packs_read = len(to_read)
    report.chunks_verified = _chunks_verified(table, to_read, bad)
    return bad


def _chunks_verified(table: _IndexTable, to_read: set[bytes], bad: set[tuple[bytes, bytes]]) -> int:
    """Distinct chunks in the packs read, minus every chunk found bad anywhere."""
    numbers = [n for n, pack_id in enumerate(table.pack_ids) if pack_id in to_read]
    if not numbers:
        return 0
    rows = np.concatenate([table.rows(n) for n in numbers]).astype(np.int64)
    read = np.unique(table.index.canonical_rows()[rows])
    bad_rows = table.index.find_rows(b"".join({cid for cid, _ in bad}))
    return len(np.setdiff1d(read, bad_rows, assume_unique=False))


def _read_pack(
    repo: Repository,
    pack_id: bytes,
    entries: list[tuple[bytes, ChunkLocation]],
    bad: set[tuple[bytes, bytes]],
) -> list[str]:
    problems = []
    name = pack_id.hex()[:16]
    try:
        data = repo.backend.get(formats.pack_key(pack_id))
    except E3Error as exc:
        bad.update((cid, pack_id) for cid, _ in entries)
        return [f"pack {name} cannot be read: {exc}"]
    for chunk_id, loc in entries:
        try:
            repo.decode_chunk(memoryview(data)[loc.offset : loc.offset + loc.length], chunk_id, loc)
        except E3Error as exc:
            bad.add((chunk_id, pack_id))
            problems.append(f"chunk {chunk_id.hex()[:16]} in pack {name}: {exc}")
    try:
        trailer = {(e.chunk_id, e.offset, e.length) for e in read_trailer(data, repo.codec)}
        indexed = {(cid, loc.offset, loc.length) for cid, loc in entries}
        if not indexed <= trailer:
            problems.append(f"pack {name}: trailer does not list every indexed chunk")
    except E3Error as exc:
        problems.append(f"pack {name}: trailer damaged ({exc}); its chunks are still readable")
    return problems


def _check_snapshots(repo: Repository, bad_chunks: set[bytes], report: CheckReport) -> list[str]:
    """Check every snapshot; returns the ids checked. Pages shared by snapshots (unchanged
    regions) are examined once: `good_pages` maps a verified page to its entry count."""
    snapshot_ids = repo.snapshot_ids()
    good_pages: dict[bytes, int] = {}
    for snapshot_id in snapshot_ids:
        report.snapshots_checked += 1
        try:
            snapshot = repo.load_snapshot(snapshot_id)
            for disk in snapshot.disks:
                _check_disk(repo, disk, bad_chunks, good_pages)
        except E3Error as exc:
            report.damaged_snapshots.add(snapshot_id)
            report.snapshot_problems.setdefault(snapshot_id, []).append(str(exc))
            report.errors.append(f"snapshot {snapshot_id[:12]} is damaged: {exc}")
    return snapshot_ids


def _check_disk(
    repo: Repository, disk: DiskRecord, bad_chunks: set[bytes], good_pages: dict[bytes, int]
) -> None:
    expected = -(-disk.size_bytes // disk.chunk_size)
    produced = missing = damaged = 0
    for page_hex in disk.pages:
        page_id = bytes.fromhex(page_hex)
        if page_id in bad_chunks:
            raise E3Error(f"disk {disk.name}: index page {page_hex[:16]} is damaged")
        known = good_pages.get(page_id)
        if known is not None:
            produced += known
            continue
        page = repo.read_chunk(page_id)
        if len(page) % formats.ID_BYTES:
            raise IntegrityError(f"index page {page_hex[:16]} has a partial entry")
        page_missing, page_damaged = _page_problems(repo, page, bad_chunks)
        produced += len(page) // formats.ID_BYTES
        if page_missing or page_damaged:
            missing += page_missing
            damaged += page_damaged
        else:
            good_pages[page_id] = len(page) // formats.ID_BYTES
    if missing or damaged:
        raise E3Error(f"disk {disk.name}: {damaged} damaged and {missing} missing chunk(s)")
    if produced != expected:
        raise IntegrityError(
            f"disk {disk.name}: index has {produced} chunks, expected {expected} for its size"
        )


def _page_problems(repo: Repository, page: bytes, bad_chunks: set[bytes]) -> tuple[int, int]:
    """(missing, damaged) chunks of one disk index page, in one batched index lookup."""
    ids = np.frombuffer(page, dtype=np.uint8).reshape(-1, formats.ID_BYTES)
    stored = np.asarray(ids.any(axis=1), dtype=np.bool_)
    damaged: npt.NDArray[np.bool_] = np.zeros(len(stored), dtype=np.bool_)
    if bad_chunks:
        damaged = np.fromiter(
            (page[pos : pos + formats.ID_BYTES] in bad_chunks for pos in range(0, len(page), 32)),
            dtype=np.bool_,
            count=len(stored),
        )
    damaged &= stored
    missing = stored & ~damaged & ~repo.index.contains_many(page)
    return int(np.count_nonzero(missing)), int(np.count_nonzero(damaged))
