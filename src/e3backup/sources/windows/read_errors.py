"""ERROR_SECTOR_NOT_FOUND on disk reads (seed 003 "Windows physical read hardening").

Strict mode fails the run with the unreadable range named. Best-effort mode narrows a failed
read down to the sectors that cannot be read (halving the range), zero-fills those, keeps every
byte that can be read, and reports each zero-filled range (DISK_IMAGE_READ_RECOVERED). Other
read errors always fail: only "sector not found" is known to be a bounded, per-sector loss.

The Windows reader raises `DeviceReadError` with the Win32 error code; tests raise the same on
chosen ranges of a real file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from e3backup.core.errors import SourceError
from e3backup.sources.disk_reader import ChangeDetecting, DiskReader
from e3backup.sources.windows.plan import Extent, merge_extents

ERROR_SECTOR_NOT_FOUND = 27


class DeviceReadError(OSError):
    """A device read failed with a Win32 error (`winerror`) at `offset`/`length`."""

    def __init__(self, winerror: int, offset: int, length: int, message: str = "") -> None:
        super().__init__(message or f"Windows error {winerror}")
        self.winerror = winerror
        self.offset = offset
        self.length = length


def is_sector_not_found(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and getattr(exc, "winerror", None) == ERROR_SECTOR_NOT_FOUND


class RecoveringReader:
    """`base` with the strict / best-effort policy for ERROR_SECTOR_NOT_FOUND.

    `on_recovered(offset, length)` is called for every zero-filled range (best effort);
    `recovered()` lists them merged, for the run's warnings.
    """

    def __init__(
        self,
        base: DiskReader,
        source: str,
        strict: bool,
        sector_size: int = 512,
        on_recovered: Callable[[int, int], None] | None = None,
    ) -> None:
        self.base = base
        self.source = source
        self.strict = strict
        self.sector_size = sector_size
        self.on_recovered = on_recovered
        self._lock = threading.Lock()
        self._recovered: list[Extent] = []

    @property
    def size_bytes(self) -> int:
        return self.base.size_bytes

    def allocated_extents(self) -> Iterator[Extent]:
        return self.base.allocated_extents()

    def read(self, offset: int, length: int) -> bytes:
        try:
            return self.base.read(offset, length)
        except OSError as exc:
            if not is_sector_not_found(exc):
                raise SourceError(f"{self.source}: read failed at byte {offset}: {exc}") from exc
            if self.strict:
                raise SourceError(
                    f"{self.source}: sector not found (ERROR_SECTOR_NOT_FOUND) reading bytes "
                    f"{offset}-{offset + length}; strict read-error mode stops the backup "
                    "(best-effort mode would zero-fill the unreadable sectors)"
                ) from exc
        return self._salvage(offset, length)

    def _salvage(self, offset: int, length: int) -> bytes:
        """Read what can be read of a range that failed; zeros for the sectors that cannot."""
        if length <= self.sector_size:
            self._record(offset, length)
            return bytes(length)
        half = (length // 2 + self.sector_size - 1) // self.sector_size * self.sector_size
        return self._try(offset, half) + self._try(offset + half, length - half)

    def _try(self, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            return self.base.read(offset, length)
        except OSError as exc:
            if not is_sector_not_found(exc):
                raise SourceError(f"{self.source}: read failed at byte {offset}: {exc}") from exc
        return self._salvage(offset, length)

    def _record(self, offset: int, length: int) -> None:
        with self._lock:
            self._recovered.append((offset, length))
        if self.on_recovered is not None:
            self.on_recovered(offset, length)

    def recovered(self) -> list[Extent]:
        with self._lock:
            return list(merge_extents(self._recovered))

    def changes_since_open(self) -> list[str]:
        warnings = self.base.changes_since_open() if isinstance(self.base, ChangeDetecting) else []
        for offset, length in self.recovered():
            warnings.append(
                f"{self.source}: bytes {offset}-{offset + length} could not be read "
                "(ERROR_SECTOR_NOT_FOUND) and were stored as zeros"
            )
        return warnings

    def close(self) -> None:
        self.base.close()
