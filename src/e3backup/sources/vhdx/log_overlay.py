"""The file as a replayed VHDX log leaves it, kept in memory over the unchanged file.

`LogOverlay` holds the bytes the log writes (4 KiB data sectors and zeroed ranges, later
writes replacing earlier ones) and the file length the log promises; `read` merges them with
the file's own bytes. Past the file's real end, up to that length, the file reads as zeros
(the extension a crash lost). Memory is bounded by the log: zero ranges are stored as ranges.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

ReadAt = Callable[[int, int], bytes]
_Piece = tuple[int, int, bytes | None]  # [start, end) and its bytes, None for zeros


class LogOverlay:
    """Non-overlapping, sorted pieces that replace the file's bytes."""

    def __init__(self, real_size: int, size: int) -> None:
        self.real_size = real_size
        self.size = max(real_size, size)
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._pieces: list[_Piece] = []

    def __len__(self) -> int:
        return len(self._pieces)

    def put(self, start: int, end: int, data: bytes | None) -> None:
        """Make [start, end) read as `data` (None: zeros), over whatever was there."""
        assert data is None or len(data) == end - start
        lo = bisect.bisect_right(self._ends, start)
        hi = bisect.bisect_left(self._starts, end)
        new: list[_Piece] = []
        if lo < hi:
            s, _, d = self._pieces[lo]
            if s < start:
                new.append((s, start, None if d is None else d[: start - s]))
        new.append((start, end, data))
        if lo < hi:
            s, e, d = self._pieces[hi - 1]
            if e > end:
                new.append((end, e, None if d is None else d[end - s :]))
        self._pieces[lo:hi] = new
        self._starts[lo:hi] = [p[0] for p in new]
        self._ends[lo:hi] = [p[1] for p in new]

    def read(self, read_at: ReadAt, offset: int, length: int) -> bytes:
        """`length` bytes at `offset` of the replayed file; `read_at` reads the real file."""
        end = offset + length
        if end > self.size:
            return read_at(offset, length)  # past every end: let the file report it
        real_end = min(end, self.real_size)
        lo = bisect.bisect_right(self._ends, offset)
        hi = bisect.bisect_left(self._starts, end)
        if lo == hi and real_end == end:
            return read_at(offset, length)
        buf = bytearray(read_at(offset, real_end - offset) if real_end > offset else b"")
        buf += bytes(end - max(offset, real_end))
        for start, stop, data in self._pieces[lo:hi]:
            a, b = max(start, offset), min(stop, end)
            buf[a - offset : b - offset] = (
                bytes(b - a) if data is None else data[a - start : b - start]
            )
        return bytes(buf)

    def reader(self, read_at: ReadAt) -> ReadAt:
        """`read_at` for the replayed file."""
        return lambda offset, length: self.read(read_at, offset, length)
