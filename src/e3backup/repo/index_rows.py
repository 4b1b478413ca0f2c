"""Index entries as numpy records, so millions of them cost bytes, not Python objects.

A row is a packed 49-byte record: the 32-byte chunk id, a pack *number* (into a table of pack
ids kept beside the rows), the blob type, offset, stored length and raw length. Overlapping
views of the id give the lookup key (its first 8 bytes read little-endian) and four 64-bit words
for full-id comparisons without per-row Python work.
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from e3backup.repo import formats

Rows = npt.NDArray[Any]  # structured, dtype ROW_DTYPE
RowNumbers = npt.NDArray[np.int64]

ROW_DTYPE = np.dtype(
    {
        "names": ["id", "key", "words", "pack", "type", "offset", "length", "raw"],
        "formats": ["V32", "<u8", ("<u8", (4,)), "<u4", "u1", "<u4", "<u4", "<u4"],
        "offsets": [0, 0, 0, 32, 36, 37, 41, 45],
        "itemsize": 49,
    }
)

# Whole-record copies go through this plain view: numpy copies a structured dtype with
# overlapping fields field by field, two orders of magnitude slower.
_RECORD = np.dtype(("V", ROW_DTYPE.itemsize))


_TAIL = struct.Struct("<IBIII")  # the fields after the id, as stored in a row


def record_location(record: bytes, pack_ids: list[bytes]) -> ChunkLocation:
    """The ChunkLocation of one row's raw 49 bytes (faster than field access for one row)."""
    pack, blob_type, offset, length, raw = _TAIL.unpack_from(record, formats.ID_BYTES)
    return ChunkLocation(pack_ids[pack], blob_type, offset, length, raw)


def as_records(rows: Rows) -> npt.NDArray[Any]:
    return rows.view(_RECORD)


def as_rows(records: npt.NDArray[Any]) -> Rows:
    return records.view(ROW_DTYPE)


def take_rows(rows: Rows, selector: Any) -> Rows:
    """rows[selector] (an index array or a mask) at memcpy speed."""
    return as_rows(as_records(rows)[selector])


@dataclass(frozen=True)
class ChunkLocation:
    pack_id: bytes
    blob_type: int
    offset: int
    length: int
    raw_length: int


def id_words(ids: bytes | bytearray | memoryview | npt.NDArray[Any]) -> npt.NDArray[np.uint64]:
    """Concatenated 32-byte ids as an (n, 4) array of little-endian words (no copy for bytes)."""
    if isinstance(ids, np.ndarray) and ids.dtype != np.uint8:
        if ids.dtype == ROW_DTYPE:
            return np.asarray(ids["words"])
        ids = ids.view(np.uint8)
    raw = np.frombuffer(ids, dtype=np.uint8) if not isinstance(ids, np.ndarray) else ids.ravel()
    if raw.size % formats.ID_BYTES:
        raise ValueError("chunk ids must be a whole number of 32-byte ids")
    return np.ascontiguousarray(raw).view("<u8").reshape(-1, 4)


def key_of(chunk_id: bytes) -> np.uint64:
    return np.uint64(int.from_bytes(chunk_id[:8], "little"))


def location(record: Any, pack_ids: list[bytes]) -> ChunkLocation:
    """The ChunkLocation of one row record."""
    return ChunkLocation(
        pack_ids[int(record["pack"])],
        int(record["type"]),
        int(record["offset"]),
        int(record["length"]),
        int(record["raw"]),
    )


def rows_from_items(
    items: Iterable[tuple[bytes, ChunkLocation]], pack_numbers: dict[bytes, int]
) -> Rows:
    """Rows for Python entries; unknown packs are numbered into `pack_numbers` as they come."""
    ids = bytearray()
    columns: tuple[list[int], list[int], list[int], list[int], list[int]] = ([], [], [], [], [])
    packs, types, offsets, lengths, raws = columns
    for chunk_id, loc in items:
        ids += chunk_id
        packs.append(pack_numbers.setdefault(loc.pack_id, len(pack_numbers)))
        types.append(loc.blob_type)
        offsets.append(loc.offset)
        lengths.append(loc.length)
        raws.append(loc.raw_length)
    rows = np.empty(len(packs), ROW_DTYPE)
    if len(ids) != formats.ID_BYTES * len(packs):
        raise ValueError("chunk ids must be 32 bytes")
    rows["id"] = np.frombuffer(bytes(ids), dtype="V32")
    for name, values in zip(("pack", "type", "offset", "length", "raw"), columns, strict=True):
        rows[name] = values
    return rows


@dataclass(frozen=True)
class IndexEntries:
    """Decoded entries of index objects: `rows` whose `pack` numbers index `pack_ids`."""

    rows: Rows
    pack_ids: list[bytes]

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def from_items(cls, items: Iterable[tuple[bytes, ChunkLocation]]) -> IndexEntries:
        numbers: dict[bytes, int] = {}
        rows = rows_from_items(items, numbers)
        return cls(rows, list(numbers))

    def items(self) -> Iterator[tuple[bytes, ChunkLocation]]:
        for record in self.rows:
            yield record["id"].tobytes(), location(record, self.pack_ids)

    def without(self, blobs: Collection[tuple[bytes, bytes]]) -> IndexEntries:
        """These entries minus the given (chunk id, pack id) pairs (damaged blobs)."""
        if not blobs or not len(self.rows):
            return self
        keys = np.array([key_of(chunk_id) for chunk_id, _ in blobs], dtype=np.uint64)
        candidates = np.flatnonzero(np.isin(self.rows["key"], keys))
        drop = [
            row
            for row in candidates
            if (self.rows["id"][row].tobytes(), self.pack_ids[int(self.rows["pack"][row])]) in blobs
        ]
        if not drop:
            return self
        keep = np.ones(len(self.rows), dtype=bool)
        keep[drop] = False
        return IndexEntries(take_rows(self.rows, keep), self.pack_ids)


@dataclass(frozen=True)
class Located:
    """The answer of a batched lookup: `found[i]` says whether id i is indexed, and then
    `rows[i]` is its record (pack numbers index `pack_ids`)."""

    found: npt.NDArray[np.bool_]
    rows: Rows
    pack_ids: list[bytes]

    def __len__(self) -> int:
        return len(self.found)

    def get(self, i: int) -> ChunkLocation | None:
        return location(self.rows[i], self.pack_ids) if self.found[i] else None

    def locations(self) -> list[ChunkLocation | None]:
        """`get(i)` for every i, converted column by column (no per-row field access)."""
        columns = [self.rows[name].tolist() for name in ("pack", "type", "offset", "length", "raw")]
        packs = self.pack_ids
        return [
            ChunkLocation(packs[pack], blob_type, offset, length, raw) if found else None
            for found, pack, blob_type, offset, length, raw in zip(
                self.found.tolist(), *columns, strict=True
            )
        ]


def concat_entries(parts: list[IndexEntries]) -> IndexEntries:
    """The rows of `parts` in order, their pack numbers renumbered into one table."""
    if len(parts) == 1:
        return parts[0]
    numbers: dict[bytes, int] = {}
    out = np.empty(sum(len(p) for p in parts), dtype=ROW_DTYPE)
    start = 0
    for part in parts:
        mapping = np.array(
            [numbers.setdefault(p, len(numbers)) for p in part.pack_ids], dtype=np.uint32
        )
        end = start + len(part)
        as_records(out)[start:end] = as_records(part.rows)
        if len(part):
            out["pack"][start:end] = mapping[part.rows["pack"]]
        start = end
    return IndexEntries(out, list(numbers))


def rows_in_packs(entries: IndexEntries, pack_ids: Collection[bytes]) -> npt.NDArray[np.bool_]:
    """A mask over `entries.rows`: True for the rows whose pack is one of `pack_ids`."""
    wanted = np.array([p in pack_ids for p in entries.pack_ids], dtype=bool)
    if not len(wanted):
        return np.zeros(len(entries), dtype=bool)
    return np.asarray(wanted[entries.rows["pack"]])
