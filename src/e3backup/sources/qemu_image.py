"""Images in formats QEMU understands (qcow2, VMDK, VDI, VHD, …), read through `qemu-nbd`.

We do not reimplement those formats: qemu-nbd exports the image read-only on a private unix
socket; allocation comes from NBD `base:allocation` block status and data from NBD reads, one
connection per reading thread. Linux-only (QEMU tooling); VHDX and raw are read natively.

qemu gets an explicit blockdev spec (driver and file, never a probe) and, unless the chain is
followed on purpose, `backing: null`: qemu then opens no file but the image itself.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from e3backup.core.errors import SourceError
from e3backup.exec.command import Command
from e3backup.exec.daemon import Daemon
from e3backup.sources.file_stamp import FileStamp
from e3backup.sources.nbd.client import NbdError
from e3backup.sources.nbd.reader import NbdExportReader

MAX_CONNECTIONS = 16
_EXPORT = "disk"


class QemuImageReader:
    """DiskReader for any image format qemu-nbd can open."""

    def __init__(self, path: Path, image_format: str, follow_backing: bool = False) -> None:
        self.path = Path(path)
        self.image_format = image_format
        self._stamp = FileStamp.of(self.path)
        self._export: NbdExportReader | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="e3backup-nbd-"))
        self._socket = self._dir / "nbd.sock"
        self._daemon = Daemon(
            Command("qemu-nbd"),
            [
                "--read-only",
                "--persistent",
                f"--shared={MAX_CONNECTIONS}",
                f"--socket={self._socket}",
                f"--export-name={_EXPORT}",
                blockdev_spec(self.path, image_format, follow_backing),
            ],
            self._dir / "qemu-nbd.log",
        )
        try:
            self._daemon.start(ready=lambda: accepts_connections(self._socket))
            self._export = self._connect_export()
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, path: Path, image_format: str, follow_backing: bool = False) -> QemuImageReader:
        if not Path(path).is_file():
            raise SourceError(f"{path}: no such image file")
        return cls(path, image_format, follow_backing)

    def _connect_export(self) -> NbdExportReader:
        try:
            return NbdExportReader(self._socket, _EXPORT)
        except NbdError as exc:
            # qemu-nbd binds its socket before opening the image: when the image is unusable
            # it exits and the connection fails; its own message is the one worth showing.
            failure = self._daemon.exit_failure()
            if failure is not None:
                raise failure from exc
            raise

    @property
    def _reader(self) -> NbdExportReader:
        if self._export is None:
            raise SourceError(f"{self.path} is closed")
        return self._export

    @property
    def size_bytes(self) -> int:
        return self._reader.size_bytes

    @property
    def connection_count(self) -> int:
        return self._export.connection_count if self._export else 0

    @property
    def bytes_read(self) -> int:
        return self._export.bytes_read if self._export else 0

    def allocated_extents(self) -> Iterator[tuple[int, int]]:
        return self._reader.allocated_extents()

    def read(self, offset: int, length: int) -> bytes:
        return self._reader.read(offset, length)

    def changes_since_open(self) -> list[str]:
        return self._stamp.changes(self.path)

    def close(self) -> None:
        if self._export is not None:
            self._export.close()
        self._daemon.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> QemuImageReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def blockdev_spec(path: Path, image_format: str, follow_backing: bool) -> str:
    """qemu's `json:` filename for the image: this driver on this file, and no backing file
    unless `follow_backing`."""
    spec: dict[str, object] = {
        "driver": image_format,
        "file": {"driver": "file", "filename": str(Path(path).absolute())},
    }
    if not follow_backing:
        spec["backing"] = None
    return "json:" + json.dumps(spec)


def accepts_connections(path: Path) -> bool:
    """True once a server listens on the unix socket `path`.

    The socket file appears at bind(), a moment before listen(): a connection in between is
    refused, so the file existing does not mean the server is ready.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
