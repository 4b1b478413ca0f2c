"""Small platform helpers for reading disks: the only module that makes OS-specific calls.

Sources read disks with positional reads from several threads at once and ask the filesystem
where the data is, so a sparse 1 TiB image with 3 GiB written costs 3 GiB of reads. Everything
that differs between Linux, macOS and Windows is kept here so the rest of the code stays portable.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
from collections.abc import Iterator
from typing import Protocol

from e3backup.core.errors import UsageError


class HasFileno(Protocol):
    def fileno(self) -> int: ...


FdOrFile = int | HasFileno

_IS_WINDOWS = os.name == "nt"
# Windows has no os.pread: its fallback moves the shared file position, so every
# seek+read pair runs under this lock. One lock for all files keeps it simple; Windows
# reads are not the hot path this project optimises for.
_SEEK_READ_LOCK = threading.Lock()
# errno values meaning "this filesystem cannot answer SEEK_DATA/SEEK_HOLE".
_UNSUPPORTED = {errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


def _fd(fd_or_file: FdOrFile) -> int:
    return fd_or_file if isinstance(fd_or_file, int) else fd_or_file.fileno()


def open_readonly(path: str | os.PathLike[str]) -> int:
    """Open `path` for reading and return a raw descriptor.

    O_BINARY matters on Windows (no newline translation); O_CLOEXEC keeps disk descriptors
    out of the external tools we spawn. Both are zero where they do not exist.
    """
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    return os.open(path, flags)


def pread(fd_or_file: FdOrFile, length: int, offset: int) -> bytes:
    """Read up to `length` bytes at `offset` without touching the file position.

    Positional reads let several threads share one descriptor safely. The result is shorter
    than `length` only at end of file: a short read from the OS (allowed for block devices
    and network filesystems) is retried until the range is complete or EOF is reached.
    """
    fd = _fd(fd_or_file)
    parts: list[bytes] = []
    remaining = length
    while remaining > 0:
        chunk = _pread_once(fd, remaining, offset)
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
        offset += len(chunk)
    return b"".join(parts)


def _pread_once(fd: int, length: int, offset: int) -> bytes:
    if not _IS_WINDOWS:
        return os.pread(fd, length, offset)
    with _SEEK_READ_LOCK:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, length)


def allocated_extents(fd_or_file: FdOrFile, size: int) -> Iterator[tuple[int, int]]:
    """Yield ascending, non-overlapping `(offset, length)` ranges that may hold data.

    Uses SEEK_DATA/SEEK_HOLE (Linux, macOS, FreeBSD) so holes in sparse files are never read;
    ranges are clipped to `size`. Where the call does not exist (Windows) or the filesystem
    refuses it (EINVAL/EOPNOTSUPP), the rest of the file is reported as one extent: reading
    zeros is slower but always correct. ENXIO means "no data at or after this offset".
    Results are filesystem-granular (typically 4 KiB blocks), never finer than the writes.
    """
    fd = _fd(fd_or_file)
    seek_data = getattr(os, "SEEK_DATA", None)
    seek_hole = getattr(os, "SEEK_HOLE", None)
    offset = 0
    while offset < size:
        if seek_data is None or seek_hole is None:
            yield offset, size - offset
            return
        try:
            data = os.lseek(fd, offset, seek_data)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return
            if exc.errno in _UNSUPPORTED:
                yield offset, size - offset
                return
            raise
        if data >= size:
            return
        try:
            hole = os.lseek(fd, data, seek_hole)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            hole = size  # the file shrank under us; report the rest as data
        end = min(max(hole, data + 1), size)  # a hole at `data` would loop forever
        yield data, end - data
        offset = end


def block_device_size(fd_or_file: FdOrFile) -> int:
    """Size of a block device in bytes.

    fstat reports 0 for block devices; seeking to the end gives the real size on Linux without
    a BLKGETSIZE64 ioctl. The file position is irrelevant because reads use `pread`.
    """
    return os.lseek(_fd(fd_or_file), 0, os.SEEK_END)


def is_block_device(path_or_fd: str | os.PathLike[str] | int) -> bool:
    """True for a block device such as /dev/sdb; False for anything else or on Windows.

    Windows physical drives (\\\\.\\PhysicalDrive0) are not block devices in the POSIX sense
    and need their own source. A path that cannot be stat'ed is not a block device.
    """
    if _IS_WINDOWS:
        return False
    try:
        return stat.S_ISBLK(os.stat(path_or_fd).st_mode)
    except OSError:
        return False


def open_for_write(path: str | os.PathLike[str], create: bool) -> int:
    """Open a restore target for positional writes (created empty when `create`)."""
    flags = os.O_WRONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    if create:
        flags |= os.O_CREAT | os.O_EXCL
    return os.open(path, flags, 0o600)


def open_device_for_write(path: str | os.PathLike[str]) -> int:
    """Open a block device to restore onto it, refusing one in use: on Linux O_EXCL without
    O_CREAT opens a block device exclusively, and fails with EBUSY while it is mounted, part of
    an active RAID/LVM/swap, or held exclusively by another program."""
    flags = os.O_WRONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    if sys.platform.startswith("linux"):
        flags |= os.O_EXCL
    try:
        return os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise UsageError(
                f"{path} is in use (mounted, or held by another program): unmount it first"
            ) from None
        raise


def pwrite(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of `data` at `offset` without moving the file position (several threads)."""
    view = memoryview(data)
    while view:
        if _IS_WINDOWS:
            with _SEEK_READ_LOCK:
                os.lseek(fd, offset, os.SEEK_SET)
                written = os.write(fd, view)
        else:
            written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
