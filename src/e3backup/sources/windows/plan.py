"""Read plans for disk images: which byte ranges of a device are read, and a reader that reads
only those (everything else reads as zeros, so unused space never leaves the host)."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from e3backup.sources.disk_reader import ChangeDetecting, DiskReader

Extent = tuple[int, int]


@dataclass(frozen=True)
class ReadPlan:
    """Sorted, merged `(offset, length)` ranges to read; `mode` says how they were found
    (`ntfs-bitmap`, `disk-layout`, `full`), `reason` why a full read was chosen ('' if not)."""

    extents: tuple[Extent, ...]
    mode: str
    reason: str = ""

    @property
    def planned_bytes(self) -> int:
        return sum(length for _, length in self.extents)

    @classmethod
    def full(cls, size_bytes: int, reason: str) -> ReadPlan:
        return cls(((0, size_bytes),) if size_bytes else (), "full", reason)


def merge_extents(extents: Iterable[Extent], size_bytes: int | None = None) -> tuple[Extent, ...]:
    """Sorted, non-overlapping, adjacent ranges joined; clipped to `size_bytes` when given."""
    out: list[list[int]] = []
    for offset, length in sorted(extents):
        end = offset + length
        if size_bytes is not None:
            end = min(end, size_bytes)
        if length <= 0 or end <= offset:
            continue
        if out and offset <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([offset, end])
    return tuple((start, end - start) for start, end in out)


def align_extents(
    extents: Iterable[Extent], granularity: int, size_bytes: int
) -> tuple[Extent, ...]:
    """Ranges widened to `granularity` boundaries (the repository's chunks), then merged."""
    widened = []
    for offset, length in extents:
        start = offset // granularity * granularity
        end = -(-(offset + length) // granularity) * granularity
        widened.append((start, end - start))
    return merge_extents(widened, size_bytes)


def shift(extents: Iterable[Extent], delta: int) -> list[Extent]:
    return [(offset + delta, length) for offset, length in extents]


class OffsetView:
    """`length` bytes of `base` starting at `start` (a partition of a disk), as a disk."""

    def __init__(self, base: DiskReader, start: int, length: int) -> None:
        self.base, self.start, self._size = base, start, length

    @property
    def size_bytes(self) -> int:
        return self._size

    def allocated_extents(self) -> Iterator[Extent]:
        yield 0, self._size

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        return self.base.read(self.start + offset, length)

    def close(self) -> None:
        """The base belongs to the caller."""


class PlannedReader:
    """`base` read through a plan: only planned ranges are read from the device, the rest of
    any requested range is zeros. `bytes_read` counts device bytes actually read."""

    def __init__(self, base: DiskReader, plan: ReadPlan) -> None:
        self.base = base
        self.plan = plan
        self._extents = merge_extents(plan.extents, base.size_bytes)
        self._starts = [offset for offset, _ in self._extents]
        self._lock = threading.Lock()
        self.bytes_read = 0

    @property
    def size_bytes(self) -> int:
        return self.base.size_bytes

    def allocated_extents(self) -> Iterator[Extent]:
        yield from self._extents

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size_bytes - offset))
        out = bytearray(length)
        end = offset + length
        i = max(0, bisect.bisect_right(self._starts, offset) - 1)
        done = 0
        while i < len(self._extents) and self._extents[i][0] < end:
            start, size = self._extents[i]
            lo, hi = max(start, offset), min(start + size, end)
            if lo < hi:
                out[lo - offset : hi - offset] = self.base.read(lo, hi - lo)
                done += hi - lo
            i += 1
        with self._lock:
            self.bytes_read += done
        return bytes(out)

    def changes_since_open(self) -> list[str]:
        return self.base.changes_since_open() if isinstance(self.base, ChangeDetecting) else []

    def close(self) -> None:
        self.base.close()
