"""Packs: many blobs in one object, with an encrypted trailer that lists them.

The trailer makes a pack self-describing, so `check --read-data` can compare it with the
index and a lost index could be rebuilt from the packs alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import blake3

from e3backup.core.errors import IntegrityError
from e3backup.repo import formats
from e3backup.repo.blob import BlobCodec


@dataclass(frozen=True)
class PackEntry:
    blob_type: int
    chunk_id: bytes
    offset: int
    length: int  # stored (encoded) length
    raw_length: int


class PackBuilder:
    """Accumulates encoded blobs; `finish` returns (pack id, bytes, entries). Not thread-safe."""

    def __init__(self) -> None:
        self._data = bytearray()  # one growing buffer: no second copy when the pack is sealed
        self.entries: list[PackEntry] = []

    @property
    def size_bytes(self) -> int:
        return len(self._data)

    def add(self, blob_type: int, chunk_id: bytes, blob: bytes, raw_length: int) -> None:
        self.entries.append(PackEntry(blob_type, chunk_id, len(self._data), len(blob), raw_length))
        self._data += blob

    def __len__(self) -> int:
        return len(self.entries)

    def finish(self, codec: BlobCodec) -> tuple[bytes, bytearray, list[PackEntry]]:
        body = formats.TRAILER_COUNT.pack(len(self.entries)) + b"".join(
            formats.PACK_ENTRY.pack(e.blob_type, e.chunk_id, e.offset, e.length, e.raw_length)
            for e in self.entries
        )
        trailer = codec.encode(body, formats.TRAILER_AD)
        data, self._data = self._data, bytearray()
        data += trailer
        data += formats.PACK_FOOTER.pack(len(trailer), formats.PACK_MAGIC)
        # Content-addressed: re-uploading the same pack is idempotent.
        return blake3.blake3(data).digest(), data, self.entries


def read_trailer(pack: bytes, codec: BlobCodec) -> list[PackEntry]:
    """Parse and verify a whole pack's trailer."""
    return read_trailer_from_tail(pack, len(pack), codec)


def trailer_tail_length(pack_size: int, footer: bytes) -> int:
    """How many bytes at the end of a pack hold its trailer and footer, given the footer."""
    if pack_size < formats.PACK_FOOTER.size or len(footer) != formats.PACK_FOOTER.size:
        raise IntegrityError("pack truncated (no footer)")
    trailer_len, magic = formats.PACK_FOOTER.unpack(footer)
    if magic != formats.PACK_MAGIC or trailer_len + formats.PACK_FOOTER.size > pack_size:
        raise IntegrityError("pack footer damaged")
    return int(trailer_len) + formats.PACK_FOOTER.size


def read_trailer_from_tail(tail: bytes, pack_size: int, codec: BlobCodec) -> list[PackEntry]:
    """Parse and verify the trailer from the last bytes of a pack (at least trailer + footer),
    so a pack's contents can be listed without reading its blobs."""
    footer = (
        bytes(tail[-formats.PACK_FOOTER.size :]) if len(tail) >= formats.PACK_FOOTER.size else b""
    )
    tail_len = trailer_tail_length(pack_size, footer)
    if len(tail) < tail_len:
        raise IntegrityError("pack truncated (trailer)")
    trailer_start = pack_size - tail_len  # in the pack
    at = len(tail) - tail_len  # in `tail`
    body = codec.decode(tail[at : len(tail) - formats.PACK_FOOTER.size], formats.TRAILER_AD)
    (count,) = formats.TRAILER_COUNT.unpack_from(body)
    if len(body) != formats.TRAILER_COUNT.size + count * formats.PACK_ENTRY.size:
        raise IntegrityError("pack trailer has the wrong length")
    entries = []
    for i in range(count):
        fields = formats.PACK_ENTRY.unpack_from(
            body, formats.TRAILER_COUNT.size + i * formats.PACK_ENTRY.size
        )
        entry = PackEntry(*fields)
        if entry.offset + entry.length > trailer_start:
            raise IntegrityError("pack trailer points outside the pack")
        entries.append(entry)
    return entries
