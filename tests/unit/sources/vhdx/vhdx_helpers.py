"""Helpers for the VHDX tests: build images with the project's writer and patch their bytes."""

from __future__ import annotations

import struct
from pathlib import Path

from e3backup.sources.vhdx import formats as f
from e3backup.sources.vhdx.writer import write_vhdx

MiB = 1024 * 1024


def expected_image(size: int, writes: dict[int, bytes]) -> bytes:
    image = bytearray(size)
    for offset, data in writes.items():
        image[offset : offset + len(data)] = data
    return bytes(image)


def make_vhdx(path: Path, size: int, writes: dict[int, bytes], **options: int) -> Path:
    write_vhdx(path, size, sorted(writes.items()), **options)
    return path


def patch(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def read_header(path: Path, index: int) -> f.Header:
    with path.open("rb") as fh:
        fh.seek(f.HEADER_OFFSETS[index])
        header = f.unpack_header(fh.read(f.HEADER_SIZE))
    assert header is not None
    return header


def rewrite_headers(path: Path, **changes: object) -> None:
    """Replace fields of both headers, keeping their checksums valid."""
    import dataclasses

    for index, offset in enumerate(f.HEADER_OFFSETS):
        header = dataclasses.replace(read_header(path, index), **changes)  # type: ignore[arg-type]
        patch(path, offset, f.pack_header(header))


def region_entries(path: Path) -> list[f.RegionEntry]:
    with path.open("rb") as fh:
        fh.seek(f.REGION_TABLE_OFFSETS[0])
        entries = f.unpack_region_table(fh.read(f.REGION_TABLE_SIZE))
    assert entries is not None
    return entries


def rewrite_regions(path: Path, entries: list[f.RegionEntry]) -> None:
    for offset in f.REGION_TABLE_OFFSETS:
        patch(path, offset, f.pack_region_table(entries))


def metadata_item_offset(path: Path, item: object) -> int:
    """File offset of a metadata item's value."""
    meta = next(e for e in region_entries(path) if e.guid == f.METADATA_GUID)
    with path.open("rb") as fh:
        fh.seek(meta.offset)
        table = f.unpack_metadata_table(fh.read(f.METADATA_TABLE_SIZE))
    assert table is not None
    entry = next(e for e in table if e.item == item)
    return meta.offset + entry.offset


def bat_offset(path: Path) -> int:
    return next(e for e in region_entries(path) if e.guid == f.BAT_GUID).offset


def set_bat_entry(path: Path, index: int, value: int) -> None:
    patch(path, bat_offset(path) + 8 * index, struct.pack("<Q", value))


def get_bat_entry(path: Path, index: int) -> int:
    with path.open("rb") as fh:
        fh.seek(bat_offset(path) + 8 * index)
        value: int = struct.unpack("<Q", fh.read(8))[0]
    return value
