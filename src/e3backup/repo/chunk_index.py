"""The in-memory chunk index: chunk id → (pack, offset, length), compact and vectorized.

Layout, about 61 bytes per chunk and no Python object per entry:
- rows: every entry as a 49-byte record (repo/index_rows.py) in blocks of 2**20 rows that never
  move once written, so adding never copies what is indexed and `items()` needs no copy;
- a sorted array of native-endian uint64 keys (the first 8 id bytes) and the row of each key
  (uint32): a lookup is one binary search plus a full-id comparison, and a whole page of ids is
  looked up in one vectorized call (`locate_many`);
- single additions wait in a small dict and are merged in batches: a batch is sorted on its own
  and merged into the sorted arrays, O(n + m log m), never a re-sort of everything.

Duplicates: the first location added for an id wins; later ones are ignored by lookups. Rows
added through the array APIs (`from_entries`, `add_entries`) are all kept, copies included,
because prune must see every copy of a chunk (`canonical_rows`, `column`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from e3backup.repo.index_rows import (
    ROW_DTYPE,
    ChunkLocation,
    IndexEntries,
    Located,
    RowNumbers,
    Rows,
    as_records,
    id_words,
    key_of,
    location,
    rows_from_items,
    take_rows,
)

__all__ = ["ChunkIndex", "ChunkLocation", "IndexEntries", "Located"]

_MERGE_THRESHOLD = 65536
_BULK_ADD = 1024  # add_many of at least this many entries goes through the array path
BLOCK_BITS = 20
BLOCK_ROWS = 1 << BLOCK_BITS
_ITEMS_BATCH = 65536

IdsLike = bytes | bytearray | memoryview | npt.NDArray[Any]


class ChunkIndex:
    """Thread-safe set of known chunks and where they are stored."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pack_ids: list[bytes] = []  # append-only: pack number -> pack id
        self._pack_numbers: dict[bytes, int] = {}
        self._blocks: list[Rows] = []
        self._row_count = 0
        self._keys = np.empty(0, dtype=np.uint64)  # sorted; replaced, never written in place
        self._order = np.empty(0, dtype=np.uint32)  # row of each key
        self._recent: dict[bytes, ChunkLocation] = {}

    @classmethod
    def from_entries(cls, parts: Iterable[IndexEntries]) -> ChunkIndex:
        """Bulk load: append every part's rows, then sort once (parts are consumed one at a
        time, so a generator keeps memory to the index plus one part)."""
        index = cls()
        for part in parts:
            index._append(part)
        keys = index._row_keys()
        order = np.argsort(keys)
        keys.sort()
        rows = order.astype(np.uint32)
        del order
        index._keys, index._order = index._unique_first(keys, rows)
        return index

    # --- adding ---------------------------------------------------------------------------------

    def add(self, chunk_id: bytes, loc: ChunkLocation) -> None:
        with self._lock:
            self._add_one(chunk_id, loc)

    def add_many(self, items: Iterable[tuple[bytes, ChunkLocation]]) -> None:
        entries = items if isinstance(items, list | tuple) else list(items)
        if len(entries) >= _BULK_ADD:
            self.add_entries(IndexEntries.from_items(entries))
            return
        with self._lock:
            for chunk_id, loc in entries:
                self._add_one(chunk_id, loc)

    def add_entries(self, entries: IndexEntries) -> None:
        """Add decoded index entries in one merge (recent single additions go first)."""
        with self._lock:
            self._merge(entries)

    def _add_one(self, chunk_id: bytes, loc: ChunkLocation) -> None:
        if len(chunk_id) != 32:
            raise ValueError("chunk ids must be 32 bytes")
        if chunk_id in self._recent or self._find_one(chunk_id) >= 0:
            return  # the first location wins
        self._pack_number(loc.pack_id)
        self._recent[chunk_id] = loc
        if len(self._recent) >= _MERGE_THRESHOLD:
            self._merge(None)

    # --- lookups --------------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys) + len(self._recent)

    def __contains__(self, chunk_id: bytes) -> bool:
        return self.get(chunk_id) is not None

    def get(self, chunk_id: bytes) -> ChunkLocation | None:
        with self._lock:
            row = self._find_one(chunk_id)
            if row >= 0:
                return location(self._record(row), self._pack_ids)
            return self._recent.get(chunk_id)

    def locate_many(self, ids: IdsLike) -> Located:
        """Look up concatenated 32-byte ids (a disk index page, say) in one vectorized call."""
        words = id_words(ids)
        with self._lock:
            rows = self._find(words)
            found = rows >= 0
            records = np.zeros(len(rows), dtype=ROW_DTYPE)
            if found.any():
                as_records(records)[found] = as_records(self._gather(rows[found]))
            if self._recent:
                self._fill_from_recent(words, found, records)
            return Located(found, records, self._pack_ids)

    def contains_many(self, ids: IdsLike) -> npt.NDArray[np.bool_]:
        return self.locate_many(ids).found

    def pack_ids(self) -> list[bytes]:
        with self._lock:
            return list(self._pack_ids)

    def items(self) -> Iterator[tuple[bytes, ChunkLocation]]:
        """Every entry (a snapshot of the index taken under the lock), in key order."""
        with self._lock:
            self._merge(None)
            order, blocks, packs = self._order, list(self._blocks), self._pack_ids
        for start in range(0, len(order), _ITEMS_BATCH):
            rows = order[start : start + _ITEMS_BATCH].astype(np.int64)
            for record in _gather(blocks, rows):
                yield record["id"].tobytes(), location(record, packs)

    # --- row-level access (prune and check) -----------------------------------------------------

    @property
    def row_count(self) -> int:
        """Rows stored, copies of an id included (≥ len(self))."""
        with self._lock:
            return self._row_count + len(self._recent)

    def find_rows(self, ids: IdsLike) -> RowNumbers:
        """The row each id resolves to, -1 where it is not indexed."""
        words = id_words(ids)
        with self._lock:
            self._merge(None)
            return self._find(words)

    def canonical_rows(self) -> RowNumbers:
        """For every row, the row its id resolves to (itself unless it is a later copy)."""
        with self._lock:
            self._merge(None)
            canon = np.full(self._row_count, -1, dtype=np.int64)
            canon[self._order] = self._order
            copies = np.flatnonzero(canon < 0)
            if copies.size:
                canon[copies] = self._find(self._gather(copies)["words"])
            return canon

    def column(self, name: str) -> npt.NDArray[Any]:
        """One field ('pack', 'length', …) of every row, in row order."""
        with self._lock:
            self._merge(None)
            parts = [block[: self._block_fill(n)][name] for n, block in enumerate(self._blocks)]
        return np.concatenate(parts) if parts else np.empty(0, dtype=ROW_DTYPE[name])

    def records(self, rows: RowNumbers) -> Rows:
        with self._lock:
            return self._gather(rows)

    # --- internals (the caller holds the lock) --------------------------------------------------

    def _pack_number(self, pack_id: bytes) -> int:
        number = self._pack_numbers.get(pack_id)
        if number is None:
            number = len(self._pack_ids)
            self._pack_ids.append(pack_id)
            self._pack_numbers[pack_id] = number
        return number

    def _record(self, row: int) -> Any:
        return self._blocks[row >> BLOCK_BITS][row & (BLOCK_ROWS - 1)]

    def _gather(self, rows: RowNumbers) -> Rows:
        return _gather(self._blocks, rows)

    def _block_fill(self, n: int) -> int:
        return min(BLOCK_ROWS, self._row_count - n * BLOCK_ROWS)

    def _find_one(self, chunk_id: bytes) -> int:
        key, keys = key_of(chunk_id), self._keys
        pos = int(keys.searchsorted(key))
        while pos < len(keys) and keys[pos] == key:
            row = int(self._order[pos])
            if self._record(row)["id"].tobytes() == chunk_id:
                return row
            pos += 1  # another id with the same first 8 bytes
        return -1

    def _find(self, words: npt.NDArray[np.uint64]) -> RowNumbers:
        query = words[:, 0].astype(np.uint64)
        keys, count = self._keys, len(self._keys)
        rows = np.full(len(query), -1, dtype=np.int64)
        if not count or not len(query):
            return rows
        pos = _search_sorted(keys, query)
        at = np.minimum(pos, count - 1)
        candidates = np.flatnonzero((pos < count) & (keys[at] == query))
        cand_rows = self._order[pos[candidates]].astype(np.int64)
        same = (self._gather(cand_rows)["words"] == words[candidates]).all(axis=1)
        rows[candidates[same]] = cand_rows[same]
        for i in candidates[~same]:  # rare: same first 8 bytes, other id; scan the key's run
            p = int(pos[i]) + 1
            while p < count and keys[p] == query[i]:
                row = int(self._order[p])
                if np.array_equal(self._record(row)["words"], words[i]):
                    rows[i] = row
                    break
                p += 1
        return rows

    def _fill_from_recent(
        self, words: npt.NDArray[np.uint64], found: npt.NDArray[np.bool_], records: Rows
    ) -> None:
        for i in np.flatnonzero(~found):
            chunk_id = words[i].tobytes()
            loc = self._recent.get(chunk_id)
            if loc is not None:
                found[i] = True
                records[i] = rows_from_items([(chunk_id, loc)], self._pack_numbers)[0]

    def _append(self, entries: IndexEntries) -> None:
        """Write rows after the last one, renumbering packs into this index's table."""
        numbers = np.array([self._pack_number(p) for p in entries.pack_ids], dtype=np.uint32)
        self._append_rows(entries.rows, numbers)

    def _append_rows(self, source: Rows, numbers: npt.NDArray[np.uint32] | None) -> None:
        done = 0
        while done < len(source):
            fill = self._row_count & (BLOCK_ROWS - 1)
            if fill == 0 and self._row_count == len(self._blocks) * BLOCK_ROWS:
                self._blocks.append(np.empty(min(BLOCK_ROWS, len(source) - done), ROW_DTYPE))
            take = min(BLOCK_ROWS - fill, len(source) - done)
            block = self._blocks[-1]
            if fill + take > len(block):  # grow the last block (doubling, up to BLOCK_ROWS)
                grown = np.empty(min(BLOCK_ROWS, max(2 * len(block), fill + take)), ROW_DTYPE)
                as_records(grown)[:fill] = as_records(block)[:fill]
                self._blocks[-1] = block = grown
            as_records(block)[fill : fill + take] = as_records(source)[done : done + take]
            if numbers is not None:
                block["pack"][fill : fill + take] = numbers[source["pack"][done : done + take]]
            done += take
            self._row_count += take

    def _row_keys(self) -> npt.NDArray[np.uint64]:
        parts = [block[: self._block_fill(n)]["key"] for n, block in enumerate(self._blocks)]
        if not parts:
            return np.empty(0, dtype=np.uint64)
        return np.concatenate(parts).astype(np.uint64, copy=False)

    def _merge(self, extra: IndexEntries | None) -> None:
        """Fold the recent additions, then `extra`, into the sorted arrays."""
        if not self._recent and (extra is None or not len(extra)):
            return
        first_row = self._row_count
        if self._recent:  # their packs are numbered already
            self._append_rows(rows_from_items(self._recent.items(), self._pack_numbers), None)
            self._recent = {}
        if extra is not None:
            self._append(extra)
        rows = np.arange(first_row, self._row_count, dtype=np.int64)
        fresh = rows[self._find(self._gather(rows)["words"]) < 0]  # copies of known ids: unindexed
        keys = self._gather(fresh)["key"].astype(np.uint64)
        order = np.argsort(keys)
        keys, new_rows = self._unique_first(keys[order], fresh[order].astype(np.uint32))
        at = np.searchsorted(self._keys, keys)  # keys are sorted here
        self._keys = np.insert(self._keys, at, keys)
        self._order = np.insert(self._order, at, new_rows)

    def _unique_first(
        self, keys: npt.NDArray[np.uint64], rows: npt.NDArray[np.uint32]
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint32]]:
        """Sorted keys minus later copies of the same id (the earliest row of an id stays)."""
        if len(keys) < 2:
            return keys, rows
        tie = keys[1:] == keys[:-1]
        if not tie.any():
            return keys, rows
        in_run = np.zeros(len(keys), dtype=bool)
        in_run[1:] |= tie
        in_run[:-1] |= tie
        positions = np.flatnonzero(in_run)
        cand_rows = rows[positions].astype(np.int64)
        words = self._gather(cand_rows)["words"]
        by_id = np.lexsort((cand_rows, words[:, 3], words[:, 2], words[:, 1], words[:, 0]))
        ordered = words[by_id]
        repeat = np.zeros(len(positions), dtype=bool)
        repeat[1:] = (ordered[1:] == ordered[:-1]).all(axis=1)
        keep = np.ones(len(keys), dtype=bool)
        keep[positions[by_id[repeat]]] = False
        return keys[keep], rows[keep]


def _search_sorted(keys: npt.NDArray[np.uint64], query: npt.NDArray[np.uint64]) -> RowNumbers:
    """np.searchsorted, with the queries sorted first: each search then starts where the last
    one ended, which is several times faster for large batches."""
    if len(query) < 64:
        return np.searchsorted(keys, query)
    order = np.argsort(query)
    pos = np.empty(len(query), dtype=np.int64)
    pos[order] = np.searchsorted(keys, query[order])
    return pos


def _gather(blocks: list[Rows], rows: RowNumbers) -> Rows:
    if len(blocks) == 1:
        return take_rows(blocks[0], rows)
    out = np.empty(len(rows), dtype=ROW_DTYPE)
    which = rows >> BLOCK_BITS
    for number in np.unique(which):
        mask = which == number
        picked = rows[mask] & (BLOCK_ROWS - 1)
        as_records(out)[mask] = as_records(blocks[int(number)])[picked]
    return out
