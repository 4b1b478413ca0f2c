"""Images in formats QEMU understands (qcow2, VMDK, VDI, VHD, …), read through `qemu-nbd`.

We do not reimplement those formats: qemu-nbd exports the image read-only on a private unix
socket; allocation comes from NBD `base:allocation` block status and data from NBD reads, one
connection per reading thread. Linux-only (QEMU tooling); VHDX and raw are read natively.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from e3backup.core.errors import SourceError
from e3backup.exec.command import Command
from e3backup.exec.daemon import Daemon
from e3backup.sources.nbd import protocol
from e3backup.sources.nbd.client import NbdClient, NbdError

MAX_CONNECTIONS = 16
_EXPORT = "disk"


class QemuImageReader:
    """DiskReader for any image format qemu-nbd can open."""

    def __init__(self, path: Path, image_format: str) -> None:
        self.path = Path(path)
        self.image_format = image_format
        self.bytes_read = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._clients: list[NbdClient] = []
        self._dir = Path(tempfile.mkdtemp(prefix="e3backup-nbd-"))
        self._socket = self._dir / "nbd.sock"
        self._daemon = Daemon(
            Command("qemu-nbd"),
            [
                "--read-only",
                "--persistent",
                f"--shared={MAX_CONNECTIONS}",
                f"--format={image_format}",
                f"--socket={self._socket}",
                f"--export-name={_EXPORT}",
                str(self.path),
            ],
            self._dir / "qemu-nbd.log",
        )
        try:
            self._daemon.start(ready=self._socket.exists)
            self._control = self._first_connection()
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, path: Path, image_format: str) -> QemuImageReader:
        if not Path(path).is_file():
            raise SourceError(f"{path}: no such image file")
        return cls(path, image_format)

    @property
    def size_bytes(self) -> int:
        return self._control.size_bytes

    def _connect(self) -> NbdClient:
        client = NbdClient.connect_unix(self._socket, _EXPORT, (protocol.BASE_ALLOCATION,))
        with self._lock:
            self._clients.append(client)
        return client

    def _first_connection(self) -> NbdClient:
        try:
            return self._connect()
        except NbdError as exc:
            # qemu-nbd binds its socket before opening the image: when the image is unusable
            # it exits and the connection fails; its own message is the one worth showing.
            failure = self._daemon.exit_failure()
            if failure is not None:
                raise failure from exc
            raise

    def allocated_extents(self) -> Iterator[tuple[int, int]]:
        unreadable = protocol.STATE_HOLE | protocol.STATE_ZERO
        start = end = -1
        for offset, length, flags in self._control.extents(protocol.BASE_ALLOCATION):
            if flags & unreadable:
                continue
            if offset == end:
                end += length
                continue
            if end > start:
                yield start, end - start
            start, end = offset, offset + length
        if end > start:
            yield start, end - start

    def read(self, offset: int, length: int) -> bytes:
        client: NbdClient | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._connect()
        data = client.read(offset, length)
        with self._lock:
            self.bytes_read += length
        return data

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
        self._daemon.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> QemuImageReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
