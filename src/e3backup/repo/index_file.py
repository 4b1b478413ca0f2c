"""Index objects: the durable record of which pack holds which chunk.

A write session writes one index object per batch of uploaded packs, always *after* those packs
are stored, so every index entry points at a complete pack.

Two ways to read them: `decode_index` yields Python entries (small objects, writers), and
`decode_index_entries` returns numpy rows without a Python object per entry (opening, prune and
check of repositories with millions of chunks).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import blake3
import numpy as np

from e3backup.core.errors import E3Error, IntegrityError, ObjectNotFound
from e3backup.repo import formats
from e3backup.repo.blob import BlobCodec
from e3backup.repo.index_rows import ROW_DTYPE, ChunkLocation, IndexEntries, concat_entries
from e3backup.storage.backend import Backend

# formats.INDEX_ENTRY as a numpy record; `pack_words` overlaps `pack` to compare pack ids fast.
_ENTRY_DTYPE = np.dtype(
    {
        "names": ["pack", "pack_words", "type", "id", "offset", "length", "raw"],
        "formats": ["V32", ("<u8", (4,)), "u1", "V32", "<u4", "<u4", "<u4"],
        "offsets": [0, 0, 32, 33, 65, 69, 73],
        "itemsize": formats.INDEX_ENTRY.size,
    }
)
_FIELDS = (("type", "type"), ("id", "id"), ("offset", "offset"), ("length", "length"))


def encode_index(entries: Iterable[tuple[bytes, ChunkLocation]]) -> bytes:
    rows = [
        formats.INDEX_ENTRY.pack(
            loc.pack_id, loc.blob_type, chunk_id, loc.offset, loc.length, loc.raw_length
        )
        for chunk_id, loc in entries
    ]
    header = formats.INDEX_HEADER.pack(formats.INDEX_MAGIC, formats.INDEX_VERSION, len(rows))
    return header + b"".join(rows)


def encode_index_entries(entries: IndexEntries) -> bytes:
    """`encode_index` for rows: the same bytes, built without a Python object per entry."""
    rows = entries.rows
    out = np.empty(len(rows), dtype=_ENTRY_DTYPE)
    packs = np.frombuffer(b"".join(entries.pack_ids), dtype="V32")
    out["pack"] = packs[rows["pack"]] if len(rows) else packs[:0]
    for ours, theirs in _FIELDS:
        out[ours] = rows[theirs]
    out["raw"] = rows["raw"]
    header = formats.INDEX_HEADER.pack(formats.INDEX_MAGIC, formats.INDEX_VERSION, len(rows))
    return header + out.tobytes()


class IndexObjectWriter:
    """Stores rows as index objects of `per_object` entries, in the order they are added,
    holding at most one object's worth of rows (plus the part being added)."""

    def __init__(self, backend: Backend, codec: BlobCodec, per_object: int) -> None:
        self._backend, self._codec, self._per_object = backend, codec, per_object
        self._parts: list[IndexEntries] = []
        self._pending = 0
        self.keys: list[str] = []

    def add(self, entries: IndexEntries) -> None:
        if not len(entries):
            return
        self._parts.append(entries)
        self._pending += len(entries)
        while self._pending >= self._per_object:
            self._write(self._per_object)

    def close(self) -> list[str]:
        """Store what is left; the keys of every object written."""
        if self._pending:
            self._write(self._pending)
        return self.keys

    def _write(self, count: int) -> None:
        whole = concat_entries(self._parts)
        payload = encode_index_entries(IndexEntries(whole.rows[:count], whole.pack_ids))
        key = formats.INDEX_PREFIX + blake3.blake3(payload).hexdigest()
        self._backend.put(key, self._codec.encode(payload, key.encode()))
        self.keys.append(key)
        rest = whole.rows[count:]
        self._parts = [IndexEntries(rest, whole.pack_ids)] if len(rest) else []
        self._pending = len(rest)


def _check_header(data: bytes | memoryview) -> int:
    if len(data) < formats.INDEX_HEADER.size:
        raise IntegrityError("index object truncated")
    magic, version, count = formats.INDEX_HEADER.unpack_from(data)
    if magic != formats.INDEX_MAGIC or version != formats.INDEX_VERSION:
        raise IntegrityError("index object has an unknown magic or version")
    if len(data) != formats.INDEX_HEADER.size + count * formats.INDEX_ENTRY.size:
        raise IntegrityError("index object has the wrong length")
    return int(count)


def decode_index(data: bytes) -> Iterator[tuple[bytes, ChunkLocation]]:
    _check_header(data)
    for pack_id, blob_type, chunk_id, offset, length, raw in formats.INDEX_ENTRY.iter_unpack(
        memoryview(data)[formats.INDEX_HEADER.size :]
    ):
        yield chunk_id, ChunkLocation(pack_id, blob_type, offset, length, raw)


def decode_index_entries(data: bytes | memoryview) -> IndexEntries:
    """An index object as rows. Writers store a pack's entries together, so pack ids are
    numbered per run of equal ids: one dict lookup per run, not per entry."""
    count = _check_header(data)
    view = np.frombuffer(data, dtype=_ENTRY_DTYPE, count=count, offset=formats.INDEX_HEADER.size)
    rows = np.empty(count, dtype=ROW_DTYPE)
    if not count:
        return IndexEntries(rows, [])
    words = view["pack_words"]
    starts = np.flatnonzero(np.r_[True, (words[1:] != words[:-1]).any(axis=1)])
    numbers: dict[bytes, int] = {}
    run_numbers = [numbers.setdefault(view["pack"][s].tobytes(), len(numbers)) for s in starts]
    rows["pack"] = np.repeat(np.array(run_numbers, dtype=np.uint32), np.diff(np.r_[starts, count]))
    for theirs, ours in _FIELDS:
        rows[ours] = view[theirs]
    rows["raw"] = view["raw"]
    return IndexEntries(rows, list(numbers))


def read_index_entries(backend: Backend, codec: BlobCodec, key: str) -> IndexEntries:
    """One index object as rows; ObjectNotFound if it is gone (superseded by a prune)."""
    data = codec.decode(backend.get(key), key.encode())
    try:
        return decode_index_entries(data)
    except IntegrityError as exc:
        raise IntegrityError(f"{key}: {exc}") from None


def read_index_objects(
    backend: Backend,
    codec: BlobCodec,
    keys: list[str],
    workers: int,
    on_error: Callable[[str, E3Error], None] | None = None,
) -> Iterator[tuple[str, IndexEntries | None]]:
    """(key, rows) for each key in order; None for an object that is gone, or unreadable when
    `on_error` takes the error (then it hears of gone objects too) instead of it being raised.
    At most 2 x `workers` objects are fetched ahead of the consumer, which bounds memory."""

    def read(key: str) -> IndexEntries | None:
        try:
            return read_index_entries(backend, codec, key)
        except ObjectNotFound as exc:
            if on_error is not None:
                on_error(key, exc)
            return None
        except E3Error as exc:
            if on_error is None:
                raise
            on_error(key, exc)
            return None

    pending = iter(keys)
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="index-read") as pool:
        window: deque[tuple[str, Future[IndexEntries | None]]] = deque()
        for key in pending:
            window.append((key, pool.submit(read, key)))
            if len(window) >= 2 * max(1, workers):
                break
        while window:
            key, future = window.popleft()
            following = next(pending, None)
            if following is not None:
                window.append((following, pool.submit(read, following)))
            yield key, future.result()
