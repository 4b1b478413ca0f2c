"""The Windows calls of the disk-image path, via ctypes: open a device, DeviceIoControl, its
length and sector size, positional sector-aligned reads. Nothing here runs at import, and every
entry point refuses clearly off Windows, so the rest of the package imports everywhere.

NOT run on a Windows host yet (see the first-run checklist in the fixtures' README).
"""

from __future__ import annotations

import ctypes
import struct
import sys
import threading
from collections.abc import Iterator
from typing import Any

from e3backup.core.errors import SourceError
from e3backup.sources.windows.read_errors import DeviceReadError

GENERIC_READ = 0x80000000
FILE_SHARE_READ_WRITE = 0x1 | 0x2
OPEN_EXISTING = 3
INVALID_HANDLE = ctypes.c_void_p(-1).value
IOCTL_DISK_GET_DRIVE_GEOMETRY = 0x00070000
IOCTL_DISK_GET_LENGTH_INFO = 0x0007405C
ERROR_MORE_DATA = 234
ERROR_HANDLE_EOF = 38


def available() -> bool:
    return sys.platform == "win32"


def _kernel32() -> Any:
    if sys.platform != "win32":
        raise SourceError("Windows devices can only be read on Windows")
    return ctypes.WinDLL("kernel32", use_last_error=True)


def _last_error() -> int:
    if sys.platform != "win32":
        return 0
    return ctypes.get_last_error()


class _Overlapped(ctypes.Structure):
    _fields_ = [
        ("Internal", ctypes.c_void_p),
        ("InternalHigh", ctypes.c_void_p),
        ("Offset", ctypes.c_uint32),
        ("OffsetHigh", ctypes.c_uint32),
        ("hEvent", ctypes.c_void_p),
    ]


class Device:
    """An open device handle (`\\\\.\\PhysicalDriveN`, a shadow copy, a partition)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.k32 = _kernel32()
        self.k32.CreateFileW.restype = ctypes.c_void_p
        self.k32.CreateFileW.argtypes = [
            ctypes.c_wchar_p,
            ctypes.c_uint32,
            ctypes.c_uint32,
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_uint32,
            ctypes.c_void_p,
        ]
        handle = self.k32.CreateFileW(
            path, GENERIC_READ, FILE_SHARE_READ_WRITE, None, OPEN_EXISTING, 0, None
        )
        if handle in (None, INVALID_HANDLE):
            raise SourceError(f"{path}: cannot open (Windows error {_last_error()})")
        self.handle = ctypes.c_void_p(handle)

    def ioctl(self, code: int, in_buffer: bytes, out_size: int) -> tuple[bytes, int]:
        """DeviceIoControl; (output, 0 or ERROR_MORE_DATA), OSError on any other failure."""
        out = ctypes.create_string_buffer(out_size)
        returned = ctypes.c_uint32(0)
        inbuf = ctypes.create_string_buffer(in_buffer, len(in_buffer)) if in_buffer else None
        ok = self.k32.DeviceIoControl(
            self.handle,
            ctypes.c_uint32(code),
            inbuf,
            ctypes.c_uint32(len(in_buffer)),
            out,
            ctypes.c_uint32(out_size),
            ctypes.byref(returned),
            None,
        )
        error = 0 if ok else _last_error()
        if error not in (0, ERROR_MORE_DATA):
            raise DeviceReadError(
                error, 0, 0, f"{self.path}: ioctl {code:#x}: Windows error {error}"
            )
        return out.raw[: returned.value], error

    def length(self) -> int:
        out, _ = self.ioctl(IOCTL_DISK_GET_LENGTH_INFO, b"", 8)
        return int(struct.unpack_from("<q", out)[0])

    def sector_size(self) -> int:
        try:
            out, _ = self.ioctl(IOCTL_DISK_GET_DRIVE_GEOMETRY, b"", 24)
            size = int(struct.unpack_from("<I", out, 20)[0])
        except (OSError, struct.error):
            return 512
        return size if size in (512, 1024, 2048, 4096) else 512

    def read_at(self, offset: int, length: int) -> bytes:
        buf = ctypes.create_string_buffer(length)
        got = ctypes.c_uint32(0)
        ov = _Overlapped(0, 0, offset & 0xFFFFFFFF, offset >> 32, None)
        if not self.k32.ReadFile(self.handle, buf, length, ctypes.byref(got), ctypes.byref(ov)):
            error = _last_error()
            if error != ERROR_HANDLE_EOF:
                raise DeviceReadError(error, offset, length, f"{self.path}: Windows error {error}")
        return buf.raw[: got.value]

    def close(self) -> None:
        if self.handle:
            self.k32.CloseHandle(self.handle)
            self.handle = ctypes.c_void_p(0)


class DeviceReader:
    """A Windows device as a DiskReader: reads widened to whole sectors (raw volume and disk
    handles refuse unaligned I/O), the size from IOCTL_DISK_GET_LENGTH_INFO."""

    def __init__(self, path: str) -> None:
        self.device = Device(path)
        try:
            self._size = self.device.length()
            self.sector_size = self.device.sector_size()
        except BaseException:
            self.device.close()
            raise
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        return self._size

    def allocated_extents(self) -> Iterator[tuple[int, int]]:
        yield 0, self._size

    def read(self, offset: int, length: int) -> bytes:
        ss = self.sector_size
        start = offset // ss * ss
        end = min(-(-(offset + length) // ss) * ss, -(-self._size // ss) * ss)
        with self._lock:  # synchronous handles serialize I/O anyway
            data = self.device.read_at(start, end - start)
        out = data[offset - start : offset - start + length]
        return out + bytes(max(0, min(length, self._size - offset) - len(out)))

    def close(self) -> None:
        self.device.close()
