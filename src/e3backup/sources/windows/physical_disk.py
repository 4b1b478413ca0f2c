"""Physical disks read by layout: the partition table (GPT or MBR, parsed from the disk's own
sectors), the metadata regions that must be kept (MBR and boot gap, GPT headers and entries,
the backup GPT at the end, extended-partition EBRs), and a plan per partition (NTFS through
its volume bitmap, anything else in full). No usable table → the whole disk (fallback).
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from e3backup.sources.disk_reader import DiskReader
from e3backup.sources.windows.plan import Extent, OffsetView, ReadPlan, merge_extents, shift
from e3backup.sources.windows.volume_bitmap import Ioctl, volume_read_plan

GPT_SIGNATURE = b"EFI PART"
MBR_EXTENDED = {0x05, 0x0F, 0x85}
MBR_PROTECTIVE = 0xEE
_BOOT_SECTOR_OEMS = (b"NTFS    ", b"EXFAT   ", b"MSDOS5.0", b"MSWIN4.1", b"mkfs.fat")
MAX_LOGICAL = 128


class LayoutError(Exception):
    """A partition table that is present but inconsistent."""


@dataclass(frozen=True)
class Partition:
    number: int  # 1-based; MBR logical partitions from 5, as Windows and Linux count them
    start: int  # bytes
    length: int  # bytes
    type: str  # MBR type byte as "0x07", or the GPT type GUID
    name: str = ""


@dataclass(frozen=True)
class DiskLayout:
    style: str  # "gpt" | "mbr"
    sector_size: int
    partitions: tuple[Partition, ...]
    metadata: tuple[Extent, ...] = field(default=())


Read = Callable[[int, int], bytes]


def parse_layout(read: Read, size_bytes: int, sector_size: int = 512) -> DiskLayout | None:
    """The disk's layout, or None when its first sector holds no partition table."""
    mbr = read(0, 512)
    if len(mbr) < 512 or mbr[510:512] != b"\x55\xaa" or mbr[3:11] in _BOOT_SECTOR_OEMS:
        return None
    entries = [_mbr_entry(mbr, i) for i in range(4)]
    if any(e[0] == MBR_PROTECTIVE for e in entries):
        for size in dict.fromkeys((sector_size, 512, 4096)):
            layout = _gpt(read, size_bytes, size)
            if layout is not None:
                return layout
        raise LayoutError("protective MBR but no valid GPT header (primary or backup)")
    return _mbr(read, size_bytes, sector_size, entries)


def _mbr_entry(sector: bytes, index: int) -> tuple[int, int, int]:
    """(type, first LBA, sector count) of a partition entry in an MBR or EBR."""
    base = 446 + 16 * index
    kind = sector[base + 4]
    first, count = struct.unpack_from("<II", sector, base + 8)
    return kind, first, count


def _mbr(read: Read, size_bytes: int, ss: int, entries: list[tuple[int, int, int]]) -> DiskLayout:
    parts: list[Partition] = []
    metadata: list[Extent] = []
    for number, (kind, first, count) in enumerate(entries, start=1):
        if not kind or not count:
            continue
        _check_inside(first, count, ss, size_bytes, number)
        if kind in MBR_EXTENDED:
            ebrs, logical = _logical_partitions(read, size_bytes, ss, first, count)
            metadata += ebrs
            parts += logical
        else:
            parts.append(Partition(number, first * ss, count * ss, f"0x{kind:02x}"))
    first_data = min([p.start for p in parts] + [start for start, _ in metadata] + [size_bytes])
    metadata.append((0, max(ss, first_data)))  # MBR and the boot-loader gap after it
    return DiskLayout(
        "mbr", ss, tuple(sorted(parts, key=lambda p: p.start)), merge_extents(metadata)
    )


def _logical_partitions(
    read: Read, size_bytes: int, ss: int, ext_first: int, ext_count: int
) -> tuple[list[Extent], list[Partition]]:
    """Walk the EBR chain of an extended partition: each EBR's sector and its logical one."""
    ebrs: list[Extent] = []
    parts: list[Partition] = []
    relative = 0
    seen: set[int] = set()
    while len(parts) < MAX_LOGICAL:
        lba = ext_first + relative
        if relative in seen or relative >= ext_count:
            raise LayoutError(f"extended partition chain loops or leaves it at sector {lba}")
        seen.add(relative)
        sector = read(lba * ss, 512)
        if len(sector) < 512 or sector[510:512] != b"\x55\xaa":
            raise LayoutError(f"no EBR signature at sector {lba}")
        ebrs.append((lba * ss, ss))
        kind, first, count = _mbr_entry(sector, 0)
        if kind and count:
            number = 5 + len(parts)
            _check_inside(lba + first, count, ss, size_bytes, number)
            parts.append(Partition(number, (lba + first) * ss, count * ss, f"0x{kind:02x}"))
        next_kind, next_first, _ = _mbr_entry(sector, 1)
        if next_kind not in MBR_EXTENDED or not next_first:
            return ebrs, parts
        relative = next_first
    raise LayoutError(f"more than {MAX_LOGICAL} logical partitions")


def _check_inside(first: int, count: int, ss: int, size_bytes: int, number: int) -> None:
    if (first + count) * ss > size_bytes or first == 0:
        raise LayoutError(
            f"partition {number} (sectors {first}-{first + count - 1}) lies outside the disk "
            f"({size_bytes // ss} sectors)"
        )


def _gpt_header(read: Read, lba: int, ss: int) -> dict[str, int] | None:
    head = read(lba * ss, ss)
    if len(head) < 92 or head[:8] != GPT_SIGNATURE:
        return None
    size = struct.unpack_from("<I", head, 12)[0]
    if not 92 <= size <= ss:
        return None
    crc = struct.unpack_from("<I", head, 16)[0]
    if zlib.crc32(head[:16] + b"\0\0\0\0" + head[20:size]) != crc:
        return None
    keys = ("current", "backup", "first_usable", "last_usable")
    values = dict(zip(keys, struct.unpack_from("<QQQQ", head, 24), strict=True))
    values["entries_lba"] = struct.unpack_from("<Q", head, 72)[0]
    values["count"], values["entry_size"], values["entries_crc"] = struct.unpack_from(
        "<III", head, 80
    )
    return values if values["current"] == lba and values["entry_size"] >= 128 else None


def _gpt(read: Read, size_bytes: int, ss: int) -> DiskLayout | None:
    last = size_bytes // ss - 1
    header = _gpt_header(read, 1, ss) or _gpt_header(read, last, ss)
    if header is None or header["count"] > 4096:
        return None
    table_bytes = header["count"] * header["entry_size"]
    table = read(header["entries_lba"] * ss, table_bytes)
    if zlib.crc32(table) != header["entries_crc"]:
        raise LayoutError("GPT partition entries fail their CRC32")
    parts = []
    for i in range(header["count"]):
        entry = table[i * header["entry_size"] : (i + 1) * header["entry_size"]]
        if entry[:16] == bytes(16):
            continue
        first, end = struct.unpack_from("<QQ", entry, 32)
        if end < first or (end + 1) * ss > size_bytes:
            raise LayoutError(
                f"GPT partition {i + 1} (sectors {first}-{end}) lies outside the disk"
            )
        name = entry[56:128].decode("utf-16-le", "replace").split("\0", 1)[0]
        type_guid = str(uuid.UUID(bytes_le=bytes(entry[:16]))).upper()
        parts.append(Partition(i + 1, first * ss, (end - first + 1) * ss, type_guid, name))
    head_end = max(header["first_usable"], header["entries_lba"] + -(-table_bytes // ss)) * ss
    tail_start = min((header["last_usable"] + 1) * ss, size_bytes)
    metadata = merge_extents([(0, head_end), (tail_start, size_bytes - tail_start)], size_bytes)
    return DiskLayout("gpt", ss, tuple(sorted(parts, key=lambda p: p.start)), metadata)


def disk_read_plan(
    reader: DiskReader,
    sector_size: int = 512,
    bitmap_for: Callable[[Partition], Ioctl | None] | None = None,
) -> tuple[ReadPlan, DiskLayout | None]:
    """Metadata regions plus each partition's plan; the whole disk when no table is found."""
    size = reader.size_bytes
    try:
        layout = parse_layout(reader.read, size, sector_size)
    except LayoutError as exc:
        return ReadPlan.full(size, f"partition table unusable ({exc}): full read"), None
    if layout is None:
        return ReadPlan.full(size, "no partition table on the disk: full read"), None
    extents = list(layout.metadata)
    notes = []
    for part in layout.partitions:
        view = OffsetView(reader, part.start, part.length)
        ioctl = bitmap_for(part) if bitmap_for is not None else None
        plan = volume_read_plan(view.read(0, 512), part.length, ioctl)
        extents += shift(plan.extents, part.start)
        if plan.reason and ioctl is not None:
            notes.append(f"partition {part.number}: {plan.reason}")
    return ReadPlan(merge_extents(extents, size), "disk-layout", "; ".join(notes)), layout
