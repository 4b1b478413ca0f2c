"""The in-memory chunk index: chunk id → (pack, offset, length), compact and vectorized.

Entries live in sorted numpy arrays (~50 bytes per chunk: the 32-byte id plus location), so a
repository with millions of chunks opens in bounded memory; a small dict absorbs recent
additions and is merged in batches. Lookups binary-search the first 8 id bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from e3backup.repo import formats

_MERGE_THRESHOLD = 65536


@dataclass(frozen=True)
class ChunkLocation:
    pack_id: bytes
    blob_type: int
    offset: int
    length: int
    raw_length: int


_LOC_DTYPE = np.dtype(
    [("pack", "<u4"), ("type", "u1"), ("offset", "<u4"), ("length", "<u4"), ("raw", "<u4")]
)


class ChunkIndex:
    """Thread-safe set of known chunks and where they are stored."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pack_ids: list[bytes] = []
        self._pack_numbers: dict[bytes, int] = {}
        self._keys = np.empty(0, dtype=">u8")  # first 8 bytes of each id, sorted
        self._ids = np.empty((0, formats.ID_BYTES), dtype=np.uint8)
        self._locs = np.empty(0, dtype=_LOC_DTYPE)
        self._recent: dict[bytes, ChunkLocation] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys) + len(self._recent)

    def add(self, chunk_id: bytes, loc: ChunkLocation) -> None:
        with self._lock:
            self._recent[chunk_id] = loc
            if len(self._recent) >= _MERGE_THRESHOLD:
                self._merge()

    def add_many(self, items: Iterable[tuple[bytes, ChunkLocation]]) -> None:
        with self._lock:
            for chunk_id, loc in items:
                self._recent[chunk_id] = loc
                if len(self._recent) >= _MERGE_THRESHOLD:
                    self._merge()

    def __contains__(self, chunk_id: bytes) -> bool:
        return self.get(chunk_id) is not None

    def get(self, chunk_id: bytes) -> ChunkLocation | None:
        with self._lock:
            loc = self._recent.get(chunk_id)
            if loc is not None:
                return loc
            row = self._find(chunk_id)
            if row < 0:
                return None
            rec = self._locs[row]
            return ChunkLocation(
                self._pack_ids[int(rec["pack"])],
                int(rec["type"]),
                int(rec["offset"]),
                int(rec["length"]),
                int(rec["raw"]),
            )

    def pack_ids(self) -> list[bytes]:
        with self._lock:
            return list(self._pack_ids)

    def items(self) -> Iterator[tuple[bytes, ChunkLocation]]:
        """Every entry (a snapshot of the index taken under the lock)."""
        with self._lock:
            self._merge()
            ids, locs, packs = self._ids.copy(), self._locs.copy(), list(self._pack_ids)
        for row in range(len(ids)):
            rec = locs[row]
            yield (
                bytes(ids[row]),
                ChunkLocation(
                    packs[int(rec["pack"])],
                    int(rec["type"]),
                    int(rec["offset"]),
                    int(rec["length"]),
                    int(rec["raw"]),
                ),
            )

    def _find(self, chunk_id: bytes) -> int:
        key = np.frombuffer(chunk_id[:8], dtype=">u8")[0]
        lo = int(np.searchsorted(self._keys, key, side="left"))
        hi = int(np.searchsorted(self._keys, key, side="right"))
        wanted = np.frombuffer(chunk_id, dtype=np.uint8)
        for row in range(lo, hi):
            if np.array_equal(self._ids[row], wanted):
                return row
        return -1

    def _pack_number(self, pack_id: bytes) -> int:
        number = self._pack_numbers.get(pack_id)
        if number is None:
            number = len(self._pack_ids)
            self._pack_ids.append(pack_id)
            self._pack_numbers[pack_id] = number
        return number

    def _merge(self) -> None:
        """Fold recent additions into the sorted arrays (caller holds the lock)."""
        if not self._recent:
            return
        new_ids = [cid for cid in self._recent if self._find(cid) < 0]
        n = len(new_ids)
        ids = np.frombuffer(b"".join(new_ids), dtype=np.uint8).reshape(n, formats.ID_BYTES)
        locs = np.empty(n, dtype=_LOC_DTYPE)
        for row, cid in enumerate(new_ids):
            loc = self._recent[cid]
            locs[row] = (
                self._pack_number(loc.pack_id),
                loc.blob_type,
                loc.offset,
                loc.length,
                loc.raw_length,
            )
        all_ids = np.concatenate([self._ids, ids])
        all_locs = np.concatenate([self._locs, locs])
        keys: npt.NDArray[np.uint64] = all_ids[:, :8].copy().view(">u8").reshape(-1)
        order = np.argsort(keys, kind="stable")
        self._keys, self._ids, self._locs = keys[order], all_ids[order], all_locs[order]
        self._recent = {}
