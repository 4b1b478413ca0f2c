"""Raw disk images and Linux block devices as disks.

A raw image is the disk's bytes stored as-is, usually as a sparse file; only its allocated
extents are read. A block device (/dev/sdb, an LVM volume) is read whole: the kernel cannot
say which of its blocks were ever written.
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
        try:
            st = os.fstat(fd)
            mode = st.st_mode
            self.is_block_device = stat.S_ISBLK(mode)
            if stat.S_ISDIR(mode):
                raise SourceError(f"{path}: is a directory, not a disk image")
            if not (stat.S_ISREG(mode) or self.is_block_device):
                raise SourceError(f"{path}: not a regular file or block device")
            if self.is_block_device:
                self._size_bytes = platform_io.block_device_size(fd)
            else:
                self._size_bytes = st.st_size
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
            data += bytes(length - len(data))
        return data

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
