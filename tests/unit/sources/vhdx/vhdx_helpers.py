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


# --- pending logs ------------------------------------------------------------------------------


def current_header(path: Path) -> f.Header:
    return max((read_header(path, i) for i in (0, 1)), key=lambda h: h.sequence)


def log_entry_positions(path: Path) -> list[int]:
    """Log offsets of the sectors that start with an entry header, in log order."""
    header = current_header(path)
    with path.open("rb") as fh:
        fh.seek(header.log_offset)
        log = fh.read(header.log_length)
    return [p for p in range(0, len(log), f.LOG_SECTOR) if log[p : p + 4] == b"loge"]


def patch_log_entry(path: Path, position: int, at: int, data: bytes, reseal: bool = True) -> None:
    """Overwrite bytes of the entry at log offset `position`; `reseal` recomputes its CRC."""
    from e3backup.sources.vhdx.crc32c import crc32c

    header = current_header(path)
    start = header.log_offset + position
    patch(path, start + at, data)
    if not reseal:
        return
    with path.open("rb") as fh:
        fh.seek(start)
        length = struct.unpack("<I", fh.read(12)[8:12])[0]
        fh.seek(start)
        entry = bytearray(fh.read(length))
    entry[4:8] = bytes(4)
    patch(path, start + 4, struct.pack("<I", crc32c(entry)))


def apply_log_ops(path: Path, entries: list[list[tuple[int, bytes | int]]]) -> None:
    """What a replay writes: every operation applied to the file itself, in order."""
    for ops in entries:
        for offset, op in ops:
            patch(path, offset, bytes(op) if isinstance(op, int) else op)


def sector_with(path: Path, offset: int, data: bytes) -> tuple[int, bytes]:
    """The 4 KiB file sector around `offset` with `data` written into it, as a log write."""
    start = offset - offset % f.LOG_SECTOR
    with path.open("rb") as fh:
        fh.seek(start)
        sector = bytearray(fh.read(f.LOG_SECTOR))
    sector[offset - start : offset - start + len(data)] = data
    return start, bytes(sector)
