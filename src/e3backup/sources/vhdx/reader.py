"""VhdxReader: a VHDX file (fixed, dynamic or differencing) read as a disk, in pure Python.

Only the BAT decides what is data: FULLY/PARTIALLY_PRESENT blocks are read from the file, a
differencing disk's NOT_PRESENT (and UNDEFINED/UNMAPPED) blocks from its parent, everything
else reads as zeros. For PARTIALLY_PRESENT blocks the chunk's sector bitmap says, sector by
sector, whether this file or the parent holds the data.
"""

from __future__ import annotations

import itertools
import logging
import os
import stat
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from e3backup.core import platform_io
from e3backup.core.errors import ImageFormatError, SourceError
from e3backup.sources.file_stamp import FileStamp
from e3backup.sources.vhdx import formats as f
from e3backup.sources.vhdx.layout import VhdxLayout, load_layout
from e3backup.sources.vhdx.parents import MAX_CHAIN_DEPTH, linkage_guids, parent_candidates

log = logging.getLogger(__name__)
_PARENT_STATES = (f.PAYLOAD_NOT_PRESENT, f.PAYLOAD_UNDEFINED, f.PAYLOAD_UNMAPPED, 5)


@dataclass(frozen=True)
class _Layer:
    path: Path
    fd: int
    file_id: tuple[int, int]
    layout: VhdxLayout


class VhdxReader:
    """A VHDX and its parent chain as one disk; `read` is safe to call from many threads.

    `bytes_read` counts bytes actually read from the files (structures, bitmaps and data),
    so callers can check that unallocated blocks were skipped.
    """

    def __init__(self, path: Path, follow_parents: bool = True) -> None:
        """Prefer `VhdxReader.open(path)`."""
        self.path = path
        self.follow_parents = follow_parents
        self.bytes_read = 0
        self._lock = threading.Lock()
        self._layers: list[_Layer] = []
        self._closed = False
        self._top_layout: VhdxLayout | None = None
        self._chain: list[Path] = []
        self._stamp: FileStamp | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str], follow_parents: bool = True) -> VhdxReader:
        """Open and validate `path` and its parents; every problem becomes a SourceError.

        With `follow_parents=False` a differencing disk is refused rather than read without
        its parent (or through a parent its locator names).
        """
        reader = cls(Path(path), follow_parents)
        try:
            reader._open_chain()
            reader._stamp = FileStamp.of(reader.path)
        except BaseException:
            reader.close()
            raise
        return reader

    # --- DiskReader ----------------------------------------------------------------------------

    @property
    def _top(self) -> VhdxLayout:
        """The opened file's own layout (kept after close, so facts stay readable)."""
        assert self._top_layout is not None, "use VhdxReader.open"
        return self._top_layout

    @property
    def size_bytes(self) -> int:
        return self._top.virtual_size

    def allocated_extents(self) -> Iterator[tuple[int, int]]:
        """Merged, sorted block ranges that hold data in this file or any parent."""
        self._check_open()
        runs: list[tuple[int, int]] = []
        for layer in self._layers:
            runs.extend(_present_runs(layer.layout))
        runs.sort()
        start = end = -1
        for s, e in runs:
            if s <= end:
                end = max(end, e)
                continue
            if end > start:
                yield start, end - start
            start, end = s, e
        if end > start:
            yield start, end - start

    def read(self, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset`; the range must lie inside the disk."""
        if offset < 0 or length < 0 or offset + length > self.size_bytes:
            raise SourceError(
                f"{self.path}: read of {length} bytes at offset {offset} is outside the disk "
                f"({self.size_bytes} bytes)"
            )
        self._check_open()
        return self._read_layer(0, offset, length)

    def changes_since_open(self) -> list[str]:
        """A warning if the VHDX file itself was written to while it was read."""
        return self._stamp.changes(self.path) if self._stamp else []

    def close(self) -> None:
        """Release every file of the chain; calling it twice is harmless."""
        with self._lock:
            layers, self._layers = self._layers, []
            self._closed = True
        for layer in layers:
            os.close(layer.fd)

    def __enter__(self) -> VhdxReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- facts about the disk ------------------------------------------------------------------

    @property
    def block_size(self) -> int:
        return self._top.block_size

    @property
    def logical_sector_size(self) -> int:
        return self._top.logical_sector

    @property
    def physical_sector_size(self) -> int:
        return self._top.physical_sector

    @property
    def data_write_guid(self) -> uuid.UUID:
        """The guid a differencing child of this file must name as its `parent_linkage`."""
        return self._top.header.data_write_guid

    @property
    def is_fixed(self) -> bool:
        return self._top.leave_allocated

    @property
    def chain(self) -> list[Path]:
        """This file, then its parent, grandparent, ... down to the base disk."""
        return list(self._chain)

    # --- internals -----------------------------------------------------------------------------

    def _open_chain(self) -> None:
        path = self.path
        layer = self._open_layer(path)
        self._top_layout = layer.layout
        if layer.layout.has_parent and not self.follow_parents:
            raise ImageFormatError(f"{path}: a differencing VHDX; its parent is not followed")
        while layer.layout.has_parent:
            if len(self._layers) >= MAX_CHAIN_DEPTH:
                raise ImageFormatError(
                    f"{self.path}: parent chain is deeper than {MAX_CHAIN_DEPTH} disks"
                )
            layer = self._open_parent(layer)

    def _open_layer(self, path: Path) -> _Layer:
        try:
            fd = platform_io.open_readonly(path)
        except FileNotFoundError as exc:
            raise SourceError(f"{path}: no such file") from exc
        except OSError as exc:
            raise SourceError(f"{path}: cannot open: {exc.strerror or exc}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise SourceError(f"{path}: not a regular file")
            file_id = (st.st_dev, st.st_ino)
            if any(layer.file_id == file_id for layer in self._layers):
                raise ImageFormatError(f"{self.path}: parent chain loops back to {path}")
            layout = load_layout(
                lambda o, n: self._pread_exact(fd, path, o, n), st.st_size, str(path)
            )
        except BaseException:
            os.close(fd)
            raise
        layer = _Layer(path, fd, file_id, layout)
        self._layers.append(layer)
        self._chain = [layer.path for layer in self._layers]
        return layer

    def _open_parent(self, child: _Layer) -> _Layer:
        locator = child.layout.parent_locator
        wanted = linkage_guids(child.path, locator)
        mismatch = None
        for candidate in parent_candidates(child.path, locator):
            parent = self._open_layer(candidate)
            if parent.layout.header.data_write_guid in wanted:
                self._check_compatible(child, parent)
                return parent
            self._layers.pop()
            self._chain.pop()
            os.close(parent.fd)
            mismatch = (
                f"{child.path}: parent candidate {candidate} was modified after the differencing "
                f"disk was created (its DataWriteGuid {parent.layout.header.data_write_guid} "
                f"is not {', '.join(str(g) for g in sorted(wanted, key=str))})"
            )
        if mismatch:
            raise ImageFormatError(mismatch)
        tried = ", ".join(f"{k}={v!r}" for k, v in sorted(locator.items()) if "path" in k)
        raise ImageFormatError(f"{child.path}: parent disk not found (locator: {tried or 'none'})")

    def _check_compatible(self, child: _Layer, parent: _Layer) -> None:
        c, p = child.layout, parent.layout
        if (c.virtual_size, c.logical_sector) != (p.virtual_size, p.logical_sector):
            raise ImageFormatError(
                f"{child.path}: parent {parent.path} has size {p.virtual_size}/sector "
                f"{p.logical_sector}, the child {c.virtual_size}/{c.logical_sector}"
            )

    def _check_open(self) -> None:
        if self._closed:
            raise SourceError(f"{self.path}: reader is closed")

    def _pread_exact(self, fd: int, path: Path, offset: int, length: int) -> bytes:
        try:
            data = platform_io.pread(fd, length, offset)
        except OSError as exc:
            raise SourceError(f"{path}: read at {offset} failed: {exc.strerror or exc}") from exc
        with self._lock:
            self.bytes_read += len(data)
        if len(data) != length:
            raise ImageFormatError(
                f"{path}: file ends at {offset + len(data)}, inside a VHDX block"
            )
        return data

    def _read_file(self, layer: _Layer, offset: int, length: int) -> bytes:
        """Bytes of the file as its replayed log leaves it (the file itself is never written)."""
        overlay = layer.layout.replayed_log
        if overlay is None:
            return self._pread_exact(layer.fd, layer.path, offset, length)
        return overlay.read(
            lambda o, n: self._pread_exact(layer.fd, layer.path, o, n), offset, length
        )

    def _read_layer(self, index: int, offset: int, length: int) -> bytes:
        layer = self._layers[index]
        lay = layer.layout
        has_parent = index + 1 < len(self._layers)
        parts: list[bytes] = []
        pos, end = offset, offset + length
        while pos < end:
            block = pos // lay.block_size
            block_start = block * lay.block_size
            piece_end = min(end, block_start + lay.block_size)
            entry = int(lay.payload[block])
            state = entry & f.BAT_STATE_MASK
            file_offset = (entry >> f.BAT_OFFSET_SHIFT) * f.MiB + (pos - block_start)
            if state == f.PAYLOAD_FULLY_PRESENT:
                parts.append(self._read_file(layer, file_offset, piece_end - pos))
            elif state == f.PAYLOAD_PARTIALLY_PRESENT:
                parts.extend(self._read_partial(index, block, pos, piece_end))
            elif has_parent and state in _PARENT_STATES:
                parts.append(self._read_layer(index + 1, pos, piece_end - pos))
            else:
                parts.append(bytes(piece_end - pos))
            pos = piece_end
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _read_partial(self, index: int, block: int, pos: int, end: int) -> list[bytes]:
        """Sector runs of a PARTIALLY_PRESENT block, each from this file or from the parent."""
        layer = self._layers[index]
        lay = layer.layout
        sector = lay.logical_sector
        chunk = block // lay.chunk_ratio
        chunk_start = chunk * lay.chunk_ratio * lay.block_size
        first, last = (pos - chunk_start) // sector, (end - 1 - chunk_start) // sector
        bitmap_at = (int(lay.bitmaps[chunk]) >> f.BAT_OFFSET_SHIFT) * f.MiB + first // 8
        raw = self._read_file(layer, bitmap_at, last // 8 - first // 8 + 1)
        bits = np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")
        bits = bits[first % 8 : first % 8 + last - first + 1]
        changes = np.flatnonzero(np.diff(bits)) + 1
        bounds = [0, *changes.tolist(), len(bits)]
        block_file = (int(lay.payload[block]) >> f.BAT_OFFSET_SHIFT) * f.MiB
        block_start = block * lay.block_size
        parts = []
        for s, e in itertools.pairwise(bounds):
            lo = max(pos, chunk_start + (first + s) * sector)
            hi = min(end, chunk_start + (first + e) * sector)
            if bits[s]:
                parts.append(self._read_file(layer, block_file + lo - block_start, hi - lo))
            else:
                parts.append(self._read_layer(index + 1, lo, hi - lo))
        return parts


def _present_runs(lay: VhdxLayout) -> list[tuple[int, int]]:
    """(start, end) byte ranges of consecutive FULLY/PARTIALLY_PRESENT blocks, clipped."""
    states = lay.payload & np.uint64(f.BAT_STATE_MASK)
    present = (states >= np.uint64(f.PAYLOAD_FULLY_PRESENT)).astype(np.int8)
    edges = np.diff(np.concatenate(([0], present, [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    size = lay.virtual_size
    return [
        (int(s) * lay.block_size, min(int(e) * lay.block_size, size))
        for s, e in zip(starts, ends, strict=True)
    ]
