"""Raw disk images and Linux block devices as disks.

A raw image is the disk's bytes stored as-is, usually as a sparse file; only its allocated
extents are read. A block device (/dev/sdb, an LVM volume) is read whole: the kernel cannot
say which of its blocks were ever written.

The size is fixed at open; `changes_since_open` tells afterwards whether the source grew, was
written to, or shrank while it was read.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from e3backup.core import platform_io
from e3backup.core.errors import SourceError

log = logging.getLogger(__name__)


class RawImageReader:
    """Reads a raw image file or a block device; `read` is safe to call from many threads.

    `bytes_read` counts bytes actually read from the file, so callers can check that holes
    were skipped.
    """

    def __init__(self, path: Path, fd: int) -> None:
        """Take ownership of an open descriptor; prefer `RawImageReader.open(path)`."""
        self.path = path
        self._fd: int | None = fd
        self._lock = threading.Lock()
        self.bytes_read = 0
        self._short_read_at: int | None = None
        try:
            st = os.fstat(fd)
            mode = st.st_mode
            self.is_block_device = stat.S_ISBLK(mode)
            if stat.S_ISDIR(mode):
                raise SourceError(f"{path}: is a directory, not a disk image")
            if not (stat.S_ISREG(mode) or self.is_block_device):
                raise SourceError(f"{path}: not a regular file or block device")
            self._size_bytes = self._current_size(fd, st)
            self._mtime_ns = st.st_mtime_ns
        except OSError as exc:
            self.close()
            raise SourceError(f"{path}: cannot determine size: {exc.strerror or exc}") from exc
        except SourceError:
            self.close()
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RawImageReader:
        """Open `path` read-only; any reason it cannot be read becomes a SourceError."""
        path = Path(path)
        try:
            fd = platform_io.open_readonly(path)
        except FileNotFoundError as exc:
            raise SourceError(f"{path}: no such file or device") from exc
        except IsADirectoryError as exc:
            raise SourceError(f"{path}: is a directory, not a disk image") from exc
        except PermissionError as exc:
            if path.is_dir():  # Windows refuses to open directories with EACCES
                raise SourceError(f"{path}: is a directory, not a disk image") from exc
            raise SourceError(f"{path}: permission denied") from exc
        except OSError as exc:
            raise SourceError(f"{path}: cannot open: {exc.strerror or exc}") from exc
        return cls(path, fd)

    @property
    def size_bytes(self) -> int:
        """Disk size in bytes, fixed when the reader was opened."""
        return self._size_bytes

    def allocated_extents(self) -> Iterator[tuple[int, int]]:
        """Sorted, merged `(offset, length)` ranges inside the disk that may hold data."""
        fd = self._require_open()
        if self.is_block_device:
            if self._size_bytes:
                yield 0, self._size_bytes
            return
        start = end = 0
        try:
            for offset, length in platform_io.allocated_extents(fd, self._size_bytes):
                if offset <= end and end > start:  # touches the pending extent: extend it
                    end = max(end, offset + length)
                    continue
                if end > start:
                    yield start, end - start
                start, end = offset, offset + length
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot list allocated extents: {exc}") from exc
        if end > start:
            yield start, end - start

    def read(self, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset`; the range must lie inside the disk."""
        if offset < 0 or length < 0 or offset + length > self._size_bytes:
            raise SourceError(
                f"{self.path}: read of {length} bytes at offset {offset} is outside the disk "
                f"({self._size_bytes} bytes)"
            )
        fd = self._require_open()
        try:
            data = platform_io.pread(fd, length, offset)
        except OSError as exc:
            raise SourceError(
                f"{self.path}: read of {length} bytes at offset {offset} failed: "
                f"{exc.strerror or exc}"
            ) from exc
        with self._lock:
            self.bytes_read += len(data)
        if len(data) < length:  # the file shrank after open; the missing tail reads as zeros
            log.debug("%s: short read at %d (%d of %d bytes)", self.path, offset, len(data), length)
            with self._lock:  # the lowest offset that came back short: where the file ended
                end, first = offset + len(data), self._short_read_at
                self._short_read_at = end if first is None else min(first, end)
            data += bytes(length - len(data))
        return data

    def changes_since_open(self) -> list[str]:
        """Warnings for growth and writes; SourceError if the source shrank while being read.

        A file that grew is saved at its opening size (the disk a VM saw then); one written to
        may mix old and new data, as any live read does. A shrink means part of what was read
        came back as zeros, and such a backup is never saved.
        """
        fd = self._require_open()
        try:
            st = os.fstat(fd)
            size = self._current_size(fd, st)
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot check it after reading: {exc}") from exc
        short_at = self._short_read_at
        if size < self._size_bytes or short_at is not None:
            shrunk = size if short_at is None else min(size, short_at)
            raise SourceError(
                f"{self.path} shrank from {self._size_bytes} to {shrunk} bytes while it was "
                "read; nothing was saved: back it up again once it is no longer changing"
            )
        warnings = []
        if size > self._size_bytes:
            warnings.append(
                f"{self.path} grew from {self._size_bytes} to {size} bytes while it was read; "
                f"the snapshot holds its first {self._size_bytes} bytes"
            )
        elif not self.is_block_device and st.st_mtime_ns != self._mtime_ns:
            warnings.append(
                f"{self.path} was written to while it was read; the snapshot may mix old and "
                "new data (snapshot the disk first for a consistent backup)"
            )
        return warnings

    def _current_size(self, fd: int, st: os.stat_result) -> int:
        return platform_io.block_device_size(fd) if self.is_block_device else st.st_size

    def close(self) -> None:
        """Release the descriptor; calling it twice is harmless."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> RawImageReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _require_open(self) -> int:
        fd = self._fd
        if fd is None:
            raise SourceError(f"{self.path}: reader is closed")
        return fd
