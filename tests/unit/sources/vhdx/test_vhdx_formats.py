"""On-disk structures: CRC-32C, headers, region tables, metadata, parent locators, BAT math."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from e3backup.sources.vhdx import formats as f
from e3backup.sources.vhdx.crc32c import crc32c

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0),
        (b"123456789", 0xE3069283),
        (bytes(32), 0x8A9136AA),  # RFC 3720 B.4 test vectors
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
    ],
)
def test_crc32c_known_vectors(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected


def test_crc32c_continues_across_calls() -> None:
    assert crc32c(b"6789", crc32c(b"12345")) == crc32c(b"123456789")


def _header(seq: int = 7) -> f.Header:
    return f.Header(seq, uuid.uuid4(), uuid.uuid4(), uuid.UUID(int=0), 0, 1, MiB, MiB)


def test_header_round_trip_and_checksum() -> None:
    header = _header()
    raw = f.pack_header(header)
    assert len(raw) == f.HEADER_SIZE and raw[:4] == b"head"
    assert f.unpack_header(raw) == header
    for flip in (4, 8, 40, 4095):
        bad = bytearray(raw)
        bad[flip] ^= 1
        assert f.unpack_header(bytes(bad)) is None
    assert f.unpack_header(raw[:100]) is None


def test_guids_are_stored_mixed_endian() -> None:
    header = _header()
    raw = f.pack_header(header)
    assert raw[16:32] == header.file_write_guid.bytes_le


def test_region_table_round_trip() -> None:
    entries = [
        f.RegionEntry(f.BAT_GUID, 3 * MiB, MiB, True),
        f.RegionEntry(f.METADATA_GUID, 2 * MiB, MiB, True),
    ]
    raw = f.pack_region_table(entries)
    assert len(raw) == f.REGION_TABLE_SIZE
    assert f.unpack_region_table(raw) == entries
    bad = bytearray(raw)
    bad[100] ^= 0x80
    assert f.unpack_region_table(bytes(bad)) is None


def test_metadata_round_trip_places_items_after_the_table() -> None:
    items = [(f.PAGE83_GUID, 6, b"x" * 16), (f.LOGICAL_SECTOR_GUID, 6, b"\x00\x02\x00\x00")]
    raw = f.pack_metadata(items)
    table = f.unpack_metadata_table(raw[: f.METADATA_TABLE_SIZE])
    assert table is not None
    assert [(e.item, e.flags, raw[e.offset : e.offset + e.length]) for e in table] == items
    assert all(e.offset >= f.METADATA_TABLE_SIZE for e in table)


def test_parent_locator_round_trip_utf16() -> None:
    pairs = {"parent_linkage": "{" + str(uuid.uuid4()) + "}", "relative_path": "..\\Bäse.vhdx"}
    parsed = f.unpack_parent_locator(f.pack_parent_locator(pairs))
    assert parsed == (f.VHDX_PARENT_LOCATOR_TYPE, pairs)


@pytest.mark.parametrize("cut", [0, 10, 25, 40])
def test_truncated_parent_locator_is_rejected(cut: int) -> None:
    raw = f.pack_parent_locator({"parent_linkage": "{x}", "relative_path": "p.vhdx"})
    assert f.unpack_parent_locator(raw[:cut]) is None


@pytest.mark.parametrize(
    ("block_size", "sector", "ratio"),
    [(32 * MiB, 512, 128), (MiB, 512, 4096), (32 * MiB, 4096, 1024), (256 * MiB, 512, 16)],
)
def test_chunk_ratio(block_size: int, sector: int, ratio: int) -> None:
    assert f.chunk_ratio(block_size, sector) == ratio


@pytest.mark.parametrize(
    ("size", "block", "ratio", "differencing", "entries"),
    [
        (10 * MiB, MiB, 4096, False, 10),
        (10 * MiB + 512, MiB, 4096, False, 11),
        (4096 * MiB, MiB, 4096, False, 4096),
        (4097 * MiB, MiB, 4096, False, 4098),  # a bitmap entry between chunk 0 and chunk 1
        (10 * MiB, MiB, 4096, True, 4097),
        (4097 * MiB, MiB, 4096, True, 2 * 4097),
    ],
)
def test_bat_entry_count(
    size: int, block: int, ratio: int, differencing: bool, entries: int
) -> None:
    assert f.bat_entry_count(size, block, ratio, differencing) == entries


def test_bat_indices_interleave_bitmaps() -> None:
    assert [f.payload_bat_index(b, 4) for b in range(9)] == [0, 1, 2, 3, 5, 6, 7, 8, 10]
    assert [f.bitmap_bat_index(c, 4) for c in range(3)] == [4, 9, 14]


def test_header_equality_ignores_nothing() -> None:
    header = _header()
    assert dataclasses.replace(header, sequence=8) != header


def _bytewise_crc32c(data: bytes) -> int:
    value = 0xFFFFFFFF
    for byte in data:
        value ^= byte
        for _ in range(8):
            value = (value >> 1) ^ 0x82F63B78 if value & 1 else value >> 1
    return value ^ 0xFFFFFFFF


@pytest.mark.parametrize("zeros", [0, 1, 2, 7, 8, 1000, 4096 - 80, 65536 - 16])
@pytest.mark.parametrize("prefix", [b"", b"\x00", b"head\x01", bytes(range(1, 200))])
def test_crc32c_zero_run_shortcut_matches_bitwise(prefix: bytes, zeros: int) -> None:
    data = prefix + bytes(zeros)
    assert crc32c(data) == _bytewise_crc32c(data)
    assert crc32c(data + b"\x01") == _bytewise_crc32c(data + b"\x01")
