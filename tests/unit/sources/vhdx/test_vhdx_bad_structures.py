"""Every malformed structure ends in ImageFormatError, never in a wrong read."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from vhdx_helpers import (
    MiB,
    bat_offset,
    get_bat_entry,
    make_vhdx,
    metadata_item_offset,
    patch,
    read_header,
    region_entries,
    rewrite_headers,
    rewrite_regions,
    set_bat_entry,
)

from e3backup.core.errors import ImageFormatError
from e3backup.sources.vhdx import VhdxReader
from e3backup.sources.vhdx import formats as f
from e3backup.sources.vhdx.log_writer import write_pending_log

WRITES = {0: b"a" * 4096, 2 * MiB: b"b" * 4096}


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    return make_vhdx(tmp_path / "d.vhdx", 4 * MiB, WRITES, block_size=MiB)


def _open(path: Path) -> None:
    with VhdxReader.open(path) as reader:
        reader.read(0, reader.size_bytes)


def _regions_with(path: Path, **changes: object) -> None:
    import dataclasses

    entries = region_entries(path)
    bat = next(e for e in entries if e.guid == f.BAT_GUID)
    others = [e for e in entries if e.guid != f.BAT_GUID]
    rewrite_regions(path, [dataclasses.replace(bat, **changes), *others])  # type: ignore[arg-type]


def _u32(value: int) -> bytes:
    return struct.pack("<I", value)


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "file id": (lambda p: patch(p, 0, b"vhdxfilX"), "signature"),
    "both headers": (
        lambda p: (patch(p, f.HEADER_OFFSETS[0] + 9, b"\x01"), patch(p, f.HEADER_OFFSETS[1], b"x")),
        "neither header",
    ),
    "damaged log": (
        lambda p: (write_pending_log(p, [[(3 * MiB, bytes(4096))]]), patch(p, MiB + 100, b"x")),
        "not shut down cleanly and its log cannot be replayed",
    ),
    "header version": (lambda p: rewrite_headers(p, version=2), "version"),
    "log outside": (lambda p: rewrite_headers(p, log_offset=1024 * MiB), "log outside"),
    "log unaligned": (lambda p: rewrite_headers(p, log_offset=MiB + 4096), "aligned"),
    "same seq": (lambda p: _same_sequence(p), "same sequence"),
    "both region tables": (
        lambda p: [patch(p, o + 20, b"\xee") for o in f.REGION_TABLE_OFFSETS] and None,
        "region table",
    ),
    "region outside": (lambda p: _regions_with(p, offset=64 * MiB), "outside"),
    "region unaligned": (lambda p: _regions_with(p, offset=3 * MiB + 512), "aligned"),
    "region in header area": (lambda p: _regions_with(p, offset=0), "outside"),
    "regions overlap": (lambda p: _regions_with(p, offset=2 * MiB), "overlap"),
    "unknown required region": (lambda p: _regions_with(p, guid=uuid.uuid4()), "unknown required"),
    "metadata signature": (
        lambda p: patch(
            p, next(e.offset for e in region_entries(p) if e.guid == f.METADATA_GUID), b"x"
        ),
        "metadata",
    ),
    "block size not power of two": (
        lambda p: patch(p, metadata_item_offset(p, f.FILE_PARAMETERS_GUID), _u32(3 * MiB)),
        "block size",
    ),
    "block size too big": (
        lambda p: patch(p, metadata_item_offset(p, f.FILE_PARAMETERS_GUID), _u32(512 * MiB)),
        "block size",
    ),
    "logical sector": (
        lambda p: patch(p, metadata_item_offset(p, f.LOGICAL_SECTOR_GUID), _u32(1024)),
        "sector",
    ),
    "virtual size zero": (
        lambda p: patch(p, metadata_item_offset(p, f.VIRTUAL_DISK_SIZE_GUID), bytes(8)),
        "virtual size",
    ),
    "virtual size huge": (
        lambda p: patch(p, metadata_item_offset(p, f.VIRTUAL_DISK_SIZE_GUID), b"\xff" * 8),
        "virtual size",
    ),
    "BAT too small for size": (
        lambda p: patch(
            p, metadata_item_offset(p, f.VIRTUAL_DISK_SIZE_GUID), struct.pack("<Q", 1 << 40)
        ),
        "cannot hold",
    ),
    "has parent without locator": (
        lambda p: patch(p, metadata_item_offset(p, f.FILE_PARAMETERS_GUID) + 4, _u32(2)),
        "parent locator",
    ),
    "BAT offset past EOF": (lambda p: set_bat_entry(p, 0, (900 << 20) | 6), "outside the file"),
    "BAT offset in header area": (lambda p: set_bat_entry(p, 0, 6), "outside the file"),
    "BAT last block past EOF": (
        lambda p: set_bat_entry(p, 2, ((p.stat().st_size >> 20) << 20) | 6),
        "past its end",
    ),
    "two blocks share a place": (lambda p: set_bat_entry(p, 1, get_bat_entry(p, 0)), "overlap"),
    "block inside the BAT": (lambda p: set_bat_entry(p, 1, (3 << 20) | 6), "overlap"),
    "block inside the metadata": (lambda p: set_bat_entry(p, 1, (2 << 20) | 6), "overlap"),
    "BAT reserved state": (lambda p: set_bat_entry(p, 1, 4), "invalid state"),
    "partial block in a non-differencing disk": (
        lambda p: set_bat_entry(p, 0, get_bat_entry(p, 0) | 7),
        "invalid state",
    ),
    "truncated file": (lambda p: _truncate(p, 5 * MiB), "file ends|outside|past"),
    "tiny file": (lambda p: _truncate(p, 4096), "too small"),
}


def _same_sequence(path: Path) -> None:
    import dataclasses

    for index, offset in enumerate(f.HEADER_OFFSETS):
        header = dataclasses.replace(
            read_header(path, index), sequence=5, data_write_guid=uuid.uuid4()
        )
        patch(path, offset, f.pack_header(header))


def _truncate(path: Path, size: int) -> None:
    with path.open("r+b") as fh:
        fh.truncate(size)


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_file_is_refused(disk: Path, case: str) -> None:
    damage, message = CASES[case]
    _open(disk)  # intact before the damage
    damage(disk)
    with pytest.raises(ImageFormatError, match=message):
        _open(disk)


def test_one_bad_header_falls_back_to_the_other(disk: Path) -> None:
    current = max((read_header(disk, i) for i in (0, 1)), key=lambda h: h.sequence)
    index = [read_header(disk, i) for i in (0, 1)].index(current)
    patch(disk, f.HEADER_OFFSETS[index] + 100, b"\x01")
    _open(disk)


def test_first_region_table_damaged_uses_the_second(disk: Path) -> None:
    patch(disk, f.REGION_TABLE_OFFSETS[0] + 40, b"\x01")
    _open(disk)


def test_zero_state_with_stray_offset_reads_zeros(disk: Path) -> None:
    set_bat_entry(disk, 0, (1 << 20) | f.PAYLOAD_ZERO)
    with VhdxReader.open(disk) as reader:
        assert reader.read(0, 4096) == bytes(4096)


def test_damaged_log_message_tells_what_to_do(disk: Path) -> None:
    write_pending_log(disk, [[(3 * MiB, bytes(4096))]])
    patch(disk, MiB + 4096 + 100, b"x")  # in the entry's data sector
    with pytest.raises(
        ImageFormatError, match=r"checksum mismatch.*Hyper-V.*qemu-img check -r all"
    ):
        _open(disk)
    assert bat_offset(disk) == 3 * MiB
