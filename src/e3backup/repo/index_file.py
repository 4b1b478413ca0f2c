"""Index objects: the durable record of which pack holds which chunk.

A write session writes one index object per batch of uploaded packs, always *after* those packs
are stored, so every index entry points at a complete pack.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from e3backup.core.errors import IntegrityError
from e3backup.repo import formats
from e3backup.repo.chunk_index import ChunkLocation


def encode_index(entries: Iterable[tuple[bytes, ChunkLocation]]) -> bytes:
    rows = [
        formats.INDEX_ENTRY.pack(
            loc.pack_id, loc.blob_type, chunk_id, loc.offset, loc.length, loc.raw_length
        )
        for chunk_id, loc in entries
    ]
    header = formats.INDEX_HEADER.pack(formats.INDEX_MAGIC, formats.INDEX_VERSION, len(rows))
    return header + b"".join(rows)


def decode_index(data: bytes) -> Iterator[tuple[bytes, ChunkLocation]]:
    if len(data) < formats.INDEX_HEADER.size:
        raise IntegrityError("index object truncated")
    magic, version, count = formats.INDEX_HEADER.unpack_from(data)
    if magic != formats.INDEX_MAGIC or version != formats.INDEX_VERSION:
        raise IntegrityError("index object has an unknown magic or version")
    if len(data) != formats.INDEX_HEADER.size + count * formats.INDEX_ENTRY.size:
        raise IntegrityError("index object has the wrong length")
    for pack_id, blob_type, chunk_id, offset, length, raw in formats.INDEX_ENTRY.iter_unpack(
        memoryview(data)[formats.INDEX_HEADER.size :]
    ):
        yield chunk_id, ChunkLocation(pack_id, blob_type, offset, length, raw)
