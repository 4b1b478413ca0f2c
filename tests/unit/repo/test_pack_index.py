"""Packs (blobs + encrypted trailer) and index objects (chunk id → pack location)."""

from __future__ import annotations

import os

import pytest

from e3backup.core.errors import IntegrityError
from e3backup.repo import formats
from e3backup.repo.blob import BlobCodec
from e3backup.repo.chunk_index import ChunkLocation
from e3backup.repo.index_file import decode_index, encode_index
from e3backup.repo.keys import MasterKeys
from e3backup.repo.pack import PackBuilder, PackEntry, read_trailer


@pytest.fixture(params=[True, False], ids=["encrypted", "plain"])
def codec(request: pytest.FixtureRequest) -> BlobCodec:
    return BlobCodec(MasterKeys.generate(encrypted=request.param))


def _build(codec: BlobCodec, count: int = 5) -> tuple[bytes, bytes, list[PackEntry], list[bytes]]:
    builder = PackBuilder()
    chunks = [os.urandom(1000 + n) if n % 2 else bytes([n]) * 5000 for n in range(count)]
    for n, chunk in enumerate(chunks):
        cid = codec.chunk_id(chunk)
        blob_type = formats.BLOB_PAGE if n == 0 else formats.BLOB_DATA
        builder.add(blob_type, cid, codec.encode(chunk, cid), len(chunk))
    assert len(builder) == count
    pack_id, data, entries = builder.finish(codec)
    return pack_id, bytes(data), list(entries), chunks


def test_pack_round_trip(codec: BlobCodec) -> None:
    pack_id, data, entries, chunks = _build(codec)
    assert len(pack_id) == 32
    assert data.endswith(formats.PACK_MAGIC)
    trailer = read_trailer(data, codec)
    assert trailer == entries
    assert [e.blob_type for e in trailer] == [formats.BLOB_PAGE] + [formats.BLOB_DATA] * 4
    offset = 0
    for entry, chunk in zip(trailer, chunks, strict=True):
        assert entry.offset == offset  # blobs are back to back from the start
        offset += entry.length
        assert entry.raw_length == len(chunk)
        blob = data[entry.offset : entry.offset + entry.length]
        assert codec.decode_chunk(blob, entry.chunk_id) == chunk


def test_empty_pack(codec: BlobCodec) -> None:
    _pack_id, data, entries = PackBuilder().finish(codec)
    assert entries == []
    assert read_trailer(bytes(data), codec) == []


def test_pack_id_is_content_address(codec: BlobCodec) -> None:
    pack_id, data, _entries, _chunks = _build(codec, 2)
    import blake3

    assert pack_id == blake3.blake3(data).digest()


@pytest.mark.parametrize("cut", [0, 1, formats.PACK_FOOTER.size - 1])
def test_truncated_pack(codec: BlobCodec, cut: int) -> None:
    _pack_id, data, _entries, _chunks = _build(codec)
    with pytest.raises(IntegrityError):
        read_trailer(data[:cut], codec)


def test_truncated_tail_is_detected(codec: BlobCodec) -> None:
    _pack_id, data, _entries, _chunks = _build(codec)
    for cut in range(1, 200):
        with pytest.raises(IntegrityError):
            read_trailer(data[:-cut], codec)


def test_every_byte_of_footer_and_trailer_is_checked(codec: BlobCodec) -> None:
    _pack_id, data, entries, _chunks = _build(codec)
    trailer_start = entries[-1].offset + entries[-1].length
    for position in range(trailer_start, len(data)):
        for mask in (0x01, 0x80):
            damaged = bytearray(data)
            damaged[position] ^= mask
            with pytest.raises(IntegrityError):
                read_trailer(bytes(damaged), codec)


@pytest.mark.parametrize("trailer_len", [0, 1, 2**32 - 1])
def test_footer_with_impossible_length(codec: BlobCodec, trailer_len: int) -> None:
    _pack_id, data, _entries, _chunks = _build(codec)
    footer = formats.PACK_FOOTER.pack(trailer_len, formats.PACK_MAGIC)
    with pytest.raises(IntegrityError):
        read_trailer(data[: -formats.PACK_FOOTER.size] + footer, codec)


def test_trailer_of_another_codec_is_rejected(codec: BlobCodec) -> None:
    _pack_id, data, _entries, _chunks = _build(codec)
    other = BlobCodec(MasterKeys.generate(encrypted=codec.encrypted))
    with pytest.raises(IntegrityError):
        read_trailer(data, other)


def test_trailer_pointing_outside_the_pack(codec: BlobCodec) -> None:
    body = formats.TRAILER_COUNT.pack(1) + formats.PACK_ENTRY.pack(0, bytes(32), 10, 100, 100)
    trailer = codec.encode(body, formats.TRAILER_AD)
    data = b"x" * 50 + trailer + formats.PACK_FOOTER.pack(len(trailer), formats.PACK_MAGIC)
    with pytest.raises(IntegrityError, match="outside"):
        read_trailer(data, codec)


def test_trailer_with_wrong_count(codec: BlobCodec) -> None:
    body = formats.TRAILER_COUNT.pack(2) + formats.PACK_ENTRY.pack(0, bytes(32), 0, 1, 1)
    trailer = codec.encode(body, formats.TRAILER_AD)
    data = b"x" + trailer + formats.PACK_FOOTER.pack(len(trailer), formats.PACK_MAGIC)
    with pytest.raises(IntegrityError, match="wrong length"):
        read_trailer(data, codec)


# --- index objects -------------------------------------------------------------------------------


def _entries(n: int) -> list[tuple[bytes, ChunkLocation]]:
    return [
        (os.urandom(32), ChunkLocation(os.urandom(32), n % 2, 2**32 - 1 - n, n, 2**31 + n))
        for n in range(n)
    ]


@pytest.mark.parametrize("count", [0, 1, 1000])
def test_index_round_trip(count: int) -> None:
    entries = _entries(count)
    data = encode_index(entries)
    assert len(data) == formats.INDEX_HEADER.size + count * formats.INDEX_ENTRY.size
    assert data.startswith(formats.INDEX_MAGIC)
    assert list(decode_index(data)) == entries


def test_index_accepts_a_generator() -> None:
    entries = _entries(3)
    assert list(decode_index(encode_index(iter(entries)))) == entries


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda d: d[:4], id="truncated-header"),
        pytest.param(lambda d: b"", id="empty"),
        pytest.param(lambda d: d[:-1], id="short-by-one"),
        pytest.param(lambda d: d + b"\0", id="long-by-one"),
        pytest.param(lambda d: d[: -formats.INDEX_ENTRY.size], id="missing-entry"),
        pytest.param(lambda d: b"E3IY" + d[4:], id="bad-magic"),
        pytest.param(lambda d: d[:4] + b"\x02" + d[5:], id="bad-version"),
        pytest.param(lambda d: d[:5] + (10**6).to_bytes(4, "little") + d[9:], id="bad-count"),
    ],
)
def test_index_damage(damage) -> None:  # type: ignore[no-untyped-def]
    data = encode_index(_entries(3))
    with pytest.raises(IntegrityError):
        list(decode_index(damage(data)))
