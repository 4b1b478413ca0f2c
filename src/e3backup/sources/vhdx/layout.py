"""Load and validate the structure of one VHDX file: headers, log, regions, metadata and BAT.

Every field is checked before it is used, and nothing is read or allocated on the strength of
a size the file claims unless the file is at least that large, so a corrupt or hostile file
costs memory in proportion to its own size and always ends in `ImageFormatError`. A pending
log is replayed in memory first (`log_replay`); everything after the headers is read through
it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from e3backup.core.errors import ImageFormatError
from e3backup.sources.vhdx import formats as f
from e3backup.sources.vhdx.log_overlay import LogOverlay
from e3backup.sources.vhdx.log_replay import replay_log

ReadAt = Callable[[int, int], bytes]
U64Array = npt.NDArray[np.uint64]
_PAYLOAD_STATES = (0, 1, 2, 3, 5, 6)


@dataclass(frozen=True)
class VhdxLayout:
    """The validated structure of one VHDX file (not its parents)."""

    header: f.Header
    block_size: int
    leave_allocated: bool
    has_parent: bool
    virtual_size: int
    logical_sector: int
    physical_sector: int
    page83: uuid.UUID
    chunk_ratio: int
    payload: U64Array  # BAT entry of each payload block, in block order
    bitmaps: U64Array  # BAT entry of each chunk's sector bitmap (0 where the BAT has none)
    parent_locator: dict[str, str] = field(default_factory=dict)
    replayed_log: LogOverlay | None = None  # read the file through it when set

    @property
    def data_blocks(self) -> int:
        return len(self.payload)


def load_layout(read_at: ReadAt, file_size: int, name: str) -> VhdxLayout:
    """Parse and validate the file; `read_at(offset, length)` returns exactly `length` bytes."""

    def bad(msg: str) -> ImageFormatError:
        return ImageFormatError(f"{name}: not a valid VHDX file: {msg}")

    if file_size < 2 * f.HEADER_AREA:
        raise bad(f"{file_size} bytes is too small")
    if read_at(0, 8) != f.FILE_ID_SIGNATURE:
        raise bad("missing 'vhdxfile' signature")
    header = _current_header(read_at, bad)
    if header.log_length % f.ALIGNMENT or header.log_offset % f.ALIGNMENT:
        raise bad("log location not 1 MiB aligned")
    if header.log_length and (
        header.log_offset < f.HEADER_AREA or header.log_offset + header.log_length > file_size
    ):
        raise bad("log outside the file")
    overlay = replay_log(read_at, file_size, header, name)
    view, view_size = read_at, file_size
    if overlay is not None:
        view, view_size = overlay.reader(read_at), overlay.size
    # Regions must lie in the real file; blocks may lie in an extension the log promises.
    bat_region, meta_region = _regions(view, file_size, bad)
    meta = _metadata(view, meta_region, bad)
    layout = _with_bat(view, view_size, header, bat_region, meta_region, meta, bad)
    return dataclasses.replace(layout, replayed_log=overlay) if overlay is not None else layout


def _current_header(read_at: ReadAt, bad: Callable[[str], ImageFormatError]) -> f.Header:
    headers = [f.unpack_header(read_at(off, f.HEADER_SIZE)) for off in f.HEADER_OFFSETS]
    valid = [h for h in headers if h is not None]
    if not valid:
        raise bad("neither header has a valid signature and checksum")
    valid.sort(key=lambda h: h.sequence, reverse=True)
    if len(valid) == 2 and valid[0].sequence == valid[1].sequence and valid[0] != valid[1]:
        raise bad("both headers carry the same sequence number but differ")
    current = valid[0]
    if current.version != 1 or current.log_version != 0:
        raise bad(f"unsupported version {current.version} (log version {current.log_version})")
    return current


def _regions(
    read_at: ReadAt, file_size: int, bad: Callable[[str], ImageFormatError]
) -> tuple[f.RegionEntry, f.RegionEntry]:
    tables = [
        f.unpack_region_table(read_at(o, f.REGION_TABLE_SIZE)) for o in f.REGION_TABLE_OFFSETS
    ]
    entries = next((t for t in tables if t is not None), None)
    if entries is None:
        raise bad("neither region table has a valid signature and checksum")
    found: dict[uuid.UUID, f.RegionEntry] = {}
    for e in entries:
        if e.guid in found:
            raise bad(f"region {e.guid} listed twice")
        if e.guid not in (f.BAT_GUID, f.METADATA_GUID):
            if e.required:
                raise bad(f"unknown required region {e.guid}")
            continue
        if e.offset % f.ALIGNMENT or e.length % f.ALIGNMENT or e.length == 0:
            raise bad(f"region {e.guid} is not 1 MiB aligned")
        if e.offset < f.HEADER_AREA or e.offset + e.length > file_size:
            raise bad(f"region {e.guid} lies outside the file")
        found[e.guid] = e
    if f.BAT_GUID not in found or f.METADATA_GUID not in found:
        raise bad("BAT or metadata region missing")
    bat, meta = found[f.BAT_GUID], found[f.METADATA_GUID]
    if bat.offset < meta.offset + meta.length and meta.offset < bat.offset + bat.length:
        raise bad("BAT and metadata regions overlap")
    return bat, meta


_ITEM_LENGTHS = {
    f.FILE_PARAMETERS_GUID: 8,
    f.VIRTUAL_DISK_SIZE_GUID: 8,
    f.PAGE83_GUID: 16,
    f.LOGICAL_SECTOR_GUID: 4,
    f.PHYSICAL_SECTOR_GUID: 4,
}


def _metadata(
    read_at: ReadAt, region: f.RegionEntry, bad: Callable[[str], ImageFormatError]
) -> dict[uuid.UUID, bytes]:
    """The values of the known metadata items, by GUID."""
    entries = f.unpack_metadata_table(read_at(region.offset, f.METADATA_TABLE_SIZE))
    if entries is None:
        raise bad("metadata table signature or entry count is wrong")
    values: dict[uuid.UUID, bytes] = {}
    seen: set[tuple[uuid.UUID, bool]] = set()
    for e in entries:
        key = (e.item, bool(e.flags & f.META_IS_USER))
        if key in seen:
            raise bad(f"metadata item {e.item} listed twice")
        seen.add(key)
        if e.length == 0:
            if e.offset != 0:
                raise bad(f"metadata item {e.item} has no length but an offset")
        elif (
            e.offset < f.METADATA_TABLE_SIZE
            or e.length > f.METADATA_MAX_ITEM
            or e.offset + e.length > region.length
        ):
            raise bad(f"metadata item {e.item} lies outside the metadata region")
        known = e.item in _ITEM_LENGTHS or e.item == f.PARENT_LOCATOR_GUID
        if e.flags & f.META_IS_USER or not known:
            if e.flags & f.META_IS_REQUIRED and not e.flags & f.META_IS_USER:
                raise bad(f"unknown required metadata item {e.item}")
            continue
        expected = _ITEM_LENGTHS.get(e.item)
        if expected is not None and e.length != expected:
            raise bad(f"metadata item {e.item} has length {e.length}, expected {expected}")
        values[e.item] = read_at(region.offset + e.offset, e.length)
    missing = [g for g in _ITEM_LENGTHS if g not in values]
    if missing:
        raise bad(f"required metadata item {missing[0]} missing")
    return values


def _with_bat(
    read_at: ReadAt,
    file_size: int,
    header: f.Header,
    bat_region: f.RegionEntry,
    meta_region: f.RegionEntry,
    meta: dict[uuid.UUID, bytes],
    bad: Callable[[str], ImageFormatError],
) -> VhdxLayout:
    block_size = int.from_bytes(meta[f.FILE_PARAMETERS_GUID][:4], "little")
    flags = int.from_bytes(meta[f.FILE_PARAMETERS_GUID][4:], "little")
    virtual_size = int.from_bytes(meta[f.VIRTUAL_DISK_SIZE_GUID], "little")
    logical = int.from_bytes(meta[f.LOGICAL_SECTOR_GUID], "little")
    physical = int.from_bytes(meta[f.PHYSICAL_SECTOR_GUID], "little")
    has_parent = bool(flags & f.FILE_PARAM_HAS_PARENT)
    if not f.MIN_BLOCK_SIZE <= block_size <= f.MAX_BLOCK_SIZE or block_size & (block_size - 1):
        raise bad(f"block size {block_size} is not a power of two between 1 and 256 MiB")
    if logical not in f.SECTOR_SIZES or physical not in f.SECTOR_SIZES:
        raise bad(f"sector sizes {logical}/{physical} are not 512 or 4096")
    if not 0 < virtual_size <= f.MAX_VIRTUAL_SIZE or virtual_size % logical:
        raise bad(f"virtual size {virtual_size} is not a positive multiple of {logical}")
    locator: dict[str, str] = {}
    if has_parent:
        raw = meta.get(f.PARENT_LOCATOR_GUID)
        parsed = f.unpack_parent_locator(raw) if raw is not None else None
        if parsed is None or parsed[0] != f.VHDX_PARENT_LOCATOR_TYPE:
            raise bad("differencing disk without a valid VHDX parent locator")
        locator = parsed[1]
        if "parent_linkage" not in locator:
            raise bad("parent locator has no parent_linkage")
    ratio = f.chunk_ratio(block_size, logical)
    count = f.bat_entry_count(virtual_size, block_size, ratio, has_parent)
    if count * 8 > bat_region.length:
        raise bad(f"BAT region of {bat_region.length} bytes cannot hold {count} entries")
    bat = np.frombuffer(read_at(bat_region.offset, count * 8), dtype="<u8").astype(np.uint64)
    data_blocks = -(-virtual_size // block_size)
    indices = np.arange(data_blocks, dtype=np.int64)
    payload = bat[indices + indices // ratio]
    chunks = -(-data_blocks // ratio)
    bitmap_idx = np.arange(chunks, dtype=np.int64) * (ratio + 1) + ratio
    bitmaps = np.zeros(chunks, dtype=np.uint64)
    in_bat = bitmap_idx < count
    bitmaps[in_bat] = bat[bitmap_idx[in_bat]]
    layout = VhdxLayout(
        header=header,
        block_size=block_size,
        leave_allocated=bool(flags & f.FILE_PARAM_LEAVE_ALLOCATED),
        has_parent=has_parent,
        virtual_size=virtual_size,
        logical_sector=logical,
        physical_sector=physical,
        page83=uuid.UUID(bytes_le=meta[f.PAGE83_GUID]),
        chunk_ratio=ratio,
        payload=payload,
        bitmaps=bitmaps,
        parent_locator=locator,
    )
    reserved = [(0, f.HEADER_AREA), (bat_region.offset, bat_region.offset + bat_region.length)]
    reserved.append((meta_region.offset, meta_region.offset + meta_region.length))
    if header.log_length:
        reserved.append((header.log_offset, header.log_offset + header.log_length))
    _check_bat(layout, file_size, reserved, bad)
    return layout


def _check_bat(
    lay: VhdxLayout,
    file_size: int,
    reserved: list[tuple[int, int]],
    bad: Callable[[str], ImageFormatError],
) -> None:
    """Every state known; every block and bitmap inside the file, overlapping nothing else.

    Offsets are 1 MiB aligned by construction (the BAT stores MiB). The overlap check also
    bounds the work a hostile file can cause: its data blocks fit in its own size.
    """
    payload, bitmaps = lay.payload, lay.bitmaps
    states = payload & np.uint64(f.BAT_STATE_MASK)
    allowed = _PAYLOAD_STATES + ((f.PAYLOAD_PARTIALLY_PRESENT,) if lay.has_parent else ())
    if not np.isin(states, np.array(allowed, dtype=np.uint64)).all():
        raise bad("BAT has a payload entry with an invalid state")
    sb_states = bitmaps & np.uint64(f.BAT_STATE_MASK)
    if not np.isin(sb_states, np.array([f.SB_NOT_PRESENT, f.SB_PRESENT], np.uint64)).all():
        raise bad("BAT has a sector bitmap entry with an invalid state")
    present = states >= np.uint64(f.PAYLOAD_FULLY_PRESENT)
    sb_present = sb_states == np.uint64(f.SB_PRESENT)
    partial = np.flatnonzero(states == np.uint64(f.PAYLOAD_PARTIALLY_PRESENT))
    if len(partial) and not sb_present[partial // lay.chunk_ratio].all():
        raise bad("partially present block without a sector bitmap")
    # The last block may be cut short by the virtual size; only its used part must exist.
    lengths = np.full(len(payload), lay.block_size, dtype=np.int64)
    lengths[-1] = lay.virtual_size - (len(payload) - 1) * lay.block_size
    shift = np.uint64(f.BAT_OFFSET_SHIFT)
    starts = np.concatenate(
        (
            (payload[present] >> shift).astype(np.int64) * f.MiB,
            (bitmaps[sb_present] >> shift).astype(np.int64) * f.MiB,
        )
    )
    ends = starts + np.concatenate(
        (lengths[present], np.full(int(sb_present.sum()), f.SECTOR_BITMAP_SIZE, np.int64))
    )
    if (starts < f.HEADER_AREA).any() or (ends > file_size).any():
        raise bad("BAT points a block outside the file or past its end")
    starts = np.concatenate((starts, np.array([r[0] for r in reserved], np.int64)))
    ends = np.concatenate((ends, np.array([r[1] for r in reserved], np.int64)))
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    if len(starts) > 1 and (np.maximum.accumulate(ends)[:-1] > starts[1:]).any():
        raise bad("BAT entries overlap each other or the BAT, metadata or log")
