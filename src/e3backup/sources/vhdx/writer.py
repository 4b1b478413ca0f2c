"""VhdxWriter: build a dynamic (or differencing) VHDX from positional writes, in any order.

Layout (the MS-VHDX recipe Hyper-V and qemu accept): file id at 0, headers at 64/128 KiB,
region tables at 192/256 KiB, an empty 1 MiB log at 1 MiB, metadata at 2 MiB, the BAT at
3 MiB, then payload blocks, each allocated (zero-filled) on the first non-zero write that
touches it. `close` writes the BAT, metadata, region tables and, last, the two headers, so a
file whose writer never finished is rejected as "not a VHDX" instead of read as a short disk.
A differencing child records, per logical sector, which sectors it holds (sector bitmaps);
all other sectors read through to the parent.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt

from e3backup.core import platform_io
from e3backup.core.errors import UsageError
from e3backup.sources.vhdx import formats as f
from e3backup.sources.vhdx.parents import format_linkage

DEFAULT_BLOCK_SIZE = 32 * f.MiB
DEFAULT_CHILD_BLOCK_SIZE = 2 * f.MiB  # what Hyper-V uses for differencing disks
_LOG_OFFSET = 1 * f.MiB
_METADATA_OFFSET = 2 * f.MiB
_BAT_OFFSET = 3 * f.MiB
_CREATOR = "e3backup"


@dataclass(frozen=True)
class ParentLink:
    """What a differencing child stores about its parent: its DataWriteGuid and where it is."""

    data_write_guid: uuid.UUID
    locator_paths: dict[str, str]  # relative_path / volume_path / absolute_win32_path


class VhdxWriter:
    """A new VHDX at `path`; `write` may be called from many threads, `close` finishes it."""

    writes_zeros = False  # unwritten ranges read as zeros (or as the parent, for a child)

    def __init__(
        self,
        path: str | os.PathLike[str],
        size_bytes: int,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        logical_sector: int = 512,
        physical_sector: int = 4096,
        parent: ParentLink | None = None,
    ) -> None:
        if not f.MIN_BLOCK_SIZE <= block_size <= f.MAX_BLOCK_SIZE or block_size & (block_size - 1):
            raise UsageError(f"VHDX block size {block_size} is not a power of two in 1-256 MiB")
        if logical_sector not in f.SECTOR_SIZES or physical_sector not in f.SECTOR_SIZES:
            raise UsageError("VHDX sector sizes must be 512 or 4096")
        if not 0 < size_bytes <= f.MAX_VIRTUAL_SIZE or size_bytes % logical_sector:
            raise UsageError(
                f"a VHDX disk size must be a positive multiple of {logical_sector} bytes up to "
                f"64 TiB; {size_bytes} is not"
            )
        self.path = Path(path)
        self.size_bytes = size_bytes
        self.block_size = block_size
        self.logical_sector = logical_sector
        self.physical_sector = physical_sector
        self.parent = parent
        self.data_write_guid = uuid.uuid4()
        self._ratio = f.chunk_ratio(block_size, logical_sector)
        self._entries = f.bat_entry_count(size_bytes, block_size, self._ratio, parent is not None)
        bat_length = -(-self._entries * 8 // f.MiB) * f.MiB
        self._next_offset = _BAT_OFFSET + bat_length
        self._bat_length = bat_length
        self._blocks: dict[int, int] = {}  # block number -> file offset
        self._bitmaps: dict[int, bytearray] = {}  # chunk number -> sector bitmap (children)
        self._lock = threading.Lock()
        try:
            self._fd = platform_io.open_for_write(self.path, create=True)
        except FileExistsError as exc:
            raise UsageError(f"{self.path} already exists") from exc
        except OSError as exc:
            raise UsageError(f"{self.path}: cannot create: {exc.strerror or exc}") from exc

    @classmethod
    def create_child(
        cls,
        path: str | os.PathLike[str],
        parent_path: str | os.PathLike[str],
        *,
        block_size: int = DEFAULT_CHILD_BLOCK_SIZE,
        locator_paths: dict[str, str] | None = None,
    ) -> VhdxWriter:
        """A differencing disk over the VHDX at `parent_path` (validated by opening it).

        The locator stores the parent's path relative to the child, Windows style; pass
        `locator_paths` to store other paths instead.
        """
        from e3backup.sources.vhdx.reader import VhdxReader  # only children need a reader

        with VhdxReader.open(parent_path) as parent:
            size, sector = parent.size_bytes, parent.logical_sector_size
            physical, guid = parent.physical_sector_size, parent.data_write_guid
        if locator_paths is None:
            rel = os.path.relpath(Path(parent_path).absolute(), Path(path).absolute().parent)
            rel = rel.replace(os.sep, "\\")
            locator_paths = {"relative_path": rel if "\\" in rel else ".\\" + rel}
        return cls(
            path,
            size,
            block_size=block_size,
            logical_sector=sector,
            physical_sector=physical,
            parent=ParentLink(guid, locator_paths),
        )

    def write(self, offset: int, data: bytes | memoryview) -> None:
        """Store `data` at disk `offset`. A child needs whole logical sectors."""
        view = memoryview(data).cast("B")
        end = offset + len(view)
        if offset < 0 or end > self.size_bytes:
            raise UsageError(f"{self.path}: write at {offset}+{len(view)} is outside the disk")
        if self.parent is not None and (offset % self.logical_sector or end % self.logical_sector):
            raise UsageError(f"{self.path}: differencing writes must cover whole sectors")
        pos = offset
        while pos < end:
            block = pos // self.block_size
            block_start = block * self.block_size
            piece_end = min(end, block_start + self.block_size)
            piece = view[pos - offset : piece_end - offset]
            block_offset = self._block_offset(block, piece, pos, piece_end)
            if block_offset is not None:
                platform_io.pwrite(self._fd, piece, block_offset + pos - block_start)
            pos = piece_end

    def close(self) -> None:
        """Write BAT, metadata, region tables and headers, fsync and close the file."""
        if self._fd < 0:
            return
        bat = self._bat()
        os.ftruncate(self._fd, self._next_offset)
        platform_io.pwrite(self._fd, bat.astype("<u8").tobytes(), _BAT_OFFSET)
        platform_io.pwrite(self._fd, self._metadata(), _METADATA_OFFSET)
        regions = [
            f.RegionEntry(f.BAT_GUID, _BAT_OFFSET, self._bat_length, True),
            f.RegionEntry(f.METADATA_GUID, _METADATA_OFFSET, f.MiB, True),
        ]
        table = f.pack_region_table(regions)
        for table_offset in f.REGION_TABLE_OFFSETS:
            platform_io.pwrite(self._fd, table, table_offset)
        platform_io.pwrite(self._fd, f.FILE_ID_SIGNATURE + _CREATOR.encode("utf-16-le"), 0)
        os.fsync(self._fd)
        file_write_guid = uuid.uuid4()
        for seq, header_offset in enumerate(f.HEADER_OFFSETS, start=1):
            header = f.Header(
                seq,
                file_write_guid,
                self.data_write_guid,
                uuid.UUID(int=0),
                0,
                1,
                f.MiB,
                _LOG_OFFSET,
            )
            platform_io.pwrite(self._fd, f.pack_header(header), header_offset)
        os.fsync(self._fd)
        self.abort()

    def abort(self) -> None:
        """Close the file without finishing it (it stays an invalid VHDX); idempotent."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> VhdxWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # --- internals -----------------------------------------------------------------------------

    def _block_offset(self, block: int, piece: memoryview, pos: int, end: int) -> int | None:
        """File offset of `block`, allocated now if needed; None when the write can be skipped."""
        if self._fd < 0:
            raise UsageError(f"{self.path}: writer is closed")
        with self._lock:
            if self.parent is not None:
                self._mark_sectors(pos, end)
            offset = self._blocks.get(block)
            if offset is not None:
                return offset
        if self.parent is None and not np.frombuffer(piece, np.uint8).any():
            return None  # all zeros into a block nobody wrote: it stays unallocated
        with self._lock:
            offset = self._blocks.get(block)
            if offset is None:
                offset = self._blocks[block] = self._next_offset
                self._next_offset += self.block_size
            return offset

    def _mark_sectors(self, pos: int, end: int) -> None:
        chunk_bytes = self._ratio * self.block_size
        while pos < end:
            chunk = pos // chunk_bytes
            stop = min(end, (chunk + 1) * chunk_bytes)
            bitmap = self._bitmaps.setdefault(chunk, bytearray(f.SECTOR_BITMAP_SIZE))
            first = (pos - chunk * chunk_bytes) // self.logical_sector
            last = (stop - chunk * chunk_bytes) // self.logical_sector
            _set_bits(bitmap, first, last)
            pos = stop

    def _bat(self) -> npt.NDArray[np.uint64]:
        bat = np.zeros(self._entries, dtype=np.uint64)
        for block, offset in self._blocks.items():
            state = f.PAYLOAD_FULLY_PRESENT
            if self.parent is not None and not self._block_fully_written(block):
                state = f.PAYLOAD_PARTIALLY_PRESENT
            bat[f.payload_bat_index(block, self._ratio)] = offset | state
        for chunk, bitmap in sorted(self._bitmaps.items()):
            offset = self._next_offset
            self._next_offset += f.SECTOR_BITMAP_SIZE
            platform_io.pwrite(self._fd, bytes(bitmap), offset)
            bat[f.bitmap_bat_index(chunk, self._ratio)] = offset | f.SB_PRESENT
        return bat

    def _block_fully_written(self, block: int) -> bool:
        """True when a child holds every sector of `block` (it can be FULLY_PRESENT)."""
        per_block = self.block_size // self.logical_sector
        chunk, index = divmod(block, self._ratio)
        disk_sectors = self.size_bytes // self.logical_sector - block * per_block
        first = index * per_block  # a multiple of 8: blocks hold at least 256 sectors
        count = min(per_block, disk_sectors)
        raw = self._bitmaps[chunk][first // 8 : (first + count + 7) // 8]
        bits = np.unpackbits(np.frombuffer(bytes(raw), np.uint8), bitorder="little")
        return bool(bits[:count].all())

    def _metadata(self) -> bytes:
        flags = f.META_IS_VIRTUAL_DISK | f.META_IS_REQUIRED
        params = self.block_size.to_bytes(4, "little") + (
            (f.FILE_PARAM_HAS_PARENT if self.parent else 0).to_bytes(4, "little")
        )
        items = [
            (f.FILE_PARAMETERS_GUID, f.META_IS_REQUIRED, params),
            (f.VIRTUAL_DISK_SIZE_GUID, flags, self.size_bytes.to_bytes(8, "little")),
            (f.PAGE83_GUID, flags, uuid.uuid4().bytes_le),
            (f.LOGICAL_SECTOR_GUID, flags, self.logical_sector.to_bytes(4, "little")),
            (f.PHYSICAL_SECTOR_GUID, flags, self.physical_sector.to_bytes(4, "little")),
        ]
        if self.parent is not None:
            pairs = {"parent_linkage": format_linkage(self.parent.data_write_guid)}
            pairs.update(self.parent.locator_paths)
            items.append((f.PARENT_LOCATOR_GUID, f.META_IS_REQUIRED, f.pack_parent_locator(pairs)))
        return f.pack_metadata(items)


def _set_bits(bitmap: bytearray, first: int, last: int) -> None:
    """Set bits [first, last) of an LSB-first bitmap."""
    while first < last and first & 7:
        bitmap[first >> 3] |= 1 << (first & 7)
        first += 1
    whole = (last - first) >> 3
    bitmap[first >> 3 : (first >> 3) + whole] = b"\xff" * whole
    first += whole * 8
    while first < last:
        bitmap[first >> 3] |= 1 << (first & 7)
        first += 1


def write_vhdx(
    path: str | os.PathLike[str],
    size_bytes: int,
    chunks: Iterable[tuple[int, bytes]],
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    logical_sector: int = 512,
    physical_sector: int = 4096,
) -> None:
    """Write a complete dynamic VHDX from `(offset, data)` pieces; see VhdxWriter."""
    writer = VhdxWriter(
        path,
        size_bytes,
        block_size=block_size,
        logical_sector=logical_sector,
        physical_sector=physical_sector,
    )
    with writer:
        for offset, data in chunks:
            writer.write(offset, data)
