"""The in-memory chunk index: chunk id → (pack, offset, length), compact and vectorized.

Layout, about 58 bytes per chunk and no Python object per entry:
- rows: every entry as a 49-byte record (repo/index_rows.py) in blocks of 2**20 rows that never
  move once written, so adding never copies what is indexed and `items()` needs no copy;
- sorted keys (repo/sorted_keys.py): the first 8 id bytes as a native-endian integer, kept as a
  bucket directory plus a uint32 per id, and the row of each (uint32). A lookup is a few cached
  steps plus a full-id comparison, and a whole page of ids is looked up in one vectorized call
  (`locate_many`);
- single additions wait in a small dict and are merged in batches: a batch is sorted on its own
  and merged into the sorted arrays, O(n + m log m), never a re-sort of everything.

Duplicates: the first location added for an id wins; later ones are ignored by lookups. Rows
added through the array APIs (`from_entries`, `add_entries`, `add_bulk`) are all kept, copies
included, because prune must see every copy of a chunk (`canonical_rows`, `column`).
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
    location,
    record_location,
    rows_from_items,
    take_rows,
)
from e3backup.repo.sorted_keys import SortedKeys

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
        self._records: list[npt.NDArray[Any]] = []  # the blocks as raw 49-byte records
        self._row_count = 0
        self._sorted = SortedKeys()  # the ids' keys in order, and the row of each
        self._recent: dict[bytes, ChunkLocation] = {}

    @classmethod
    def from_entries(cls, parts: Iterable[IndexEntries]) -> ChunkIndex:
        """Bulk load: append every part's rows, then sort once (parts are consumed one at a
        time, so a generator keeps memory to the index plus one part)."""
        index = cls()
        index.add_bulk(parts)
        return index

    def add_bulk(self, parts: Iterable[IndexEntries]) -> None:
        """Add many decoded index objects at once: into an empty index with one sort, else with
        one merge (the lock is held while `parts` is consumed)."""
        with self._lock:
            if len(self._sorted) or self._recent:
                self._merge(parts)
                return
            for part in parts:
                self._append(part)
            keys = self._row_keys()
            order = np.argsort(keys)
            keys.sort()
            rows = order.astype(np.uint32)
            del order
            self._sorted.rebuild(*self._unique_first(keys, rows))

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
            self._merge([entries])

    def _add_one(self, chunk_id: bytes, loc: ChunkLocation) -> None:
        if len(chunk_id) != 32:
            raise ValueError("chunk ids must be 32 bytes")
        if chunk_id in self._recent or self._find_one(chunk_id) is not None:
            return  # the first location wins
        self._pack_number(loc.pack_id)
        self._recent[chunk_id] = loc
        if len(self._recent) >= _MERGE_THRESHOLD:
            self._merge()

    # --- lookups --------------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return len(self._sorted) + len(self._recent)

    def __contains__(self, chunk_id: bytes) -> bool:
        return self.get(chunk_id) is not None

    def get(self, chunk_id: bytes) -> ChunkLocation | None:
        with self._lock:
            record = self._find_one(chunk_id)
            if record is not None:
                return record_location(record, self._pack_ids)
            return self._recent.get(chunk_id)

    def locate_many(self, ids: IdsLike) -> Located:
        """Look up concatenated 32-byte ids (a disk index page, say) in one vectorized call."""
        words = id_words(ids)
        with self._lock:
            records = np.zeros(len(words), dtype=ROW_DTYPE)
            found = self._find(words, records) >= 0
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
            self._merge()
            order, blocks, packs = self._sorted.rows, list(self._blocks), self._pack_ids
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
            self._merge()
            return self._find(words)

    def canonical_rows(self) -> RowNumbers:
        """For every row, the row its id resolves to (itself unless it is a later copy)."""
        with self._lock:
            self._merge()
            canon = np.full(self._row_count, -1, dtype=np.int64)
            order = self._sorted.rows
            canon[order] = order
            copies = np.flatnonzero(canon < 0)
            if copies.size:
                canon[copies] = self._find(self._gather(copies)["words"])
            return canon

    def column(self, name: str) -> npt.NDArray[Any]:
        """One field ('pack', 'length', …) of every row, in row order."""
        with self._lock:
            self._merge()
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

    def _record_bytes(self, row: int) -> bytes:
        return bytes(self._records[row >> BLOCK_BITS][row & (BLOCK_ROWS - 1)])

    def _gather(self, rows: RowNumbers) -> Rows:
        return _gather(self._blocks, rows)

    def _block_fill(self, n: int) -> int:
        return min(BLOCK_ROWS, self._row_count - n * BLOCK_ROWS)

    def _find_one(self, chunk_id: bytes) -> bytes | None:
        """The raw record of `chunk_id`, None if it is not in the sorted arrays."""
        if not len(self._sorted):
            return None
        keys = self._sorted
        pos, end, sub_key = keys.run_of(int.from_bytes(chunk_id[:8], "little"))
        while pos < end and keys.sub[pos] == sub_key:
            record = self._record_bytes(int(keys.rows[pos]))
            if record[:32] == chunk_id:
                return record
            pos += 1  # another id with the same key bits
        return None

    def _find(self, words: npt.NDArray[np.uint64], records: Rows | None = None) -> RowNumbers:
        """The row of each id, -1 if absent; with `records`, also fills in the hits' records."""
        keys = self._sorted
        found = np.full(len(words), -1, dtype=np.int64)
        if not len(keys) or not len(words):
            return found
        buckets, subs = keys.split(words[:, 0].astype(np.uint64))
        pos, end = keys.lower_bound(buckets, subs)
        at = np.minimum(pos, len(keys) - 1)
        candidates = np.flatnonzero((pos < end) & (keys.sub[at] == subs))
        rows = keys.rows[pos[candidates]].astype(np.int64)
        gathered = self._gather(rows)
        same = (gathered["words"] == words[candidates]).all(axis=1)
        found[candidates[same]] = rows[same]
        if records is not None:
            as_records(records)[candidates[same]] = as_records(gathered)[same]
        for i in candidates[~same]:  # rare: same key bits, another id; scan the run
            p = int(pos[i]) + 1
            while p < end[i] and keys.sub[p] == subs[i]:
                row = int(keys.rows[p])
                if np.array_equal(self._record(row)["words"], words[i]):
                    found[i] = row
                    if records is not None:
                        records[i] = self._record(row)
                    break
                p += 1
        return found

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
                # Full capacity at once: pages are only resident once written, and a block
                # never grows by copying (first touches of memory are what loading costs).
                self._blocks.append(np.empty(BLOCK_ROWS, ROW_DTYPE))
                self._records.append(as_records(self._blocks[-1]))
            take = min(BLOCK_ROWS - fill, len(source) - done)
            block = self._blocks[-1]
            as_records(block)[fill : fill + take] = as_records(source)[done : done + take]
            if numbers is not None:
                block["pack"][fill : fill + take] = numbers[source["pack"][done : done + take]]
            done += take
            self._row_count += take

    def _row_keys_at(self, rows: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint64]:
        """The keys of the given rows (one field gathered, not whole records)."""
        keys = np.empty(len(rows), dtype=np.uint64)
        which = rows >> BLOCK_BITS
        for number in np.unique(which):
            mask = which == number
            keys[mask] = self._blocks[int(number)]["key"][rows[mask] & (BLOCK_ROWS - 1)]
        return keys

    def _row_keys(self) -> npt.NDArray[np.uint64]:
        parts = [block[: self._block_fill(n)]["key"] for n, block in enumerate(self._blocks)]
        if not parts:
            return np.empty(0, dtype=np.uint64)
        return np.concatenate(parts).astype(np.uint64, copy=False)

    def _merge(self, extra: Iterable[IndexEntries] = ()) -> None:
        """Fold the recent additions, then the `extra` parts, into the sorted arrays."""
        first_row = self._row_count
        if self._recent:  # their packs are numbered already
            self._append_rows(rows_from_items(self._recent.items(), self._pack_numbers), None)
            self._recent = {}
        for part in extra:
            self._append(part)
        if self._row_count == first_row:
            return
        rows = np.arange(first_row, self._row_count, dtype=np.int64)
        fresh = rows[self._find(self._gather(rows)["words"]) < 0]  # copies of known ids: unindexed
        keys = self._gather(fresh)["key"].astype(np.uint64)
        order = np.argsort(keys)
        keys, new_rows = self._unique_first(keys[order], fresh[order].astype(np.uint32))
        if not self._sorted.needs_rebuild(len(self._sorted) + len(keys)):
            self._sorted.insert(keys, new_rows)
            return
        old_rows = self._sorted.rows
        all_keys = np.concatenate([self._row_keys_at(old_rows), keys])
        all_rows = np.concatenate([old_rows, new_rows])
        order = np.argsort(all_keys)
        self._sorted.rebuild(all_keys[order], all_rows[order])

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
