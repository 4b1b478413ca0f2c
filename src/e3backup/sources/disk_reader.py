"""The interface the engines need from anything that looks like a disk. Image files, block
devices, VHDX, NBD exports all implement it; it lives here, below the engines, so that the
sources' own interfaces (hypervisor providers hand out disk readers) can name it too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable


class DiskReader(Protocol):
    """A readable, fixed-size disk.

    `allocated_extents` yields sorted, non-overlapping `(offset, length)` ranges that may hold
    non-zero data; everything outside them reads as zeros, so the engine never reads it.
    A reader that cannot tell yields one extent covering the whole disk.
    `read` returns exactly `length` bytes for ranges inside the disk (zeros where unallocated).
    """

    @property
    def size_bytes(self) -> int: ...

    def allocated_extents(self) -> Iterator[tuple[int, int]]: ...

    def read(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


@runtime_checkable
class ChangeDetecting(Protocol):
    """A reader that can tell whether its source changed while it was read (files, devices)."""

    def changes_since_open(self) -> list[str]:
        """Warnings about harmless changes (it grew, it was written to); raises SourceError
        when what was read cannot be trusted (it shrank: the missing tail read as zeros)."""
