"""DiskReader over an NBD export on a unix socket (qemu-nbd for images, QEMU's own server for a
VM's fleecing node), one connection per reading thread; allocation from `base:allocation`,
changes from `qemu:dirty-bitmap:NAME`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from e3backup.sources.nbd import protocol
from e3backup.sources.nbd.client import NbdClient

DIRTY_CONTEXT_PREFIX = "qemu:dirty-bitmap:"
DIRTY = 1


class NbdExportReader:
    def __init__(self, socket_path: Path, export_name: str, bitmap: str | None = None) -> None:
        self.socket_path = socket_path
        self.export_name = export_name
        self.bitmap = bitmap
        self.bytes_read = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._clients: list[NbdClient] = []
        contexts: tuple[str, ...] = (protocol.BASE_ALLOCATION,)
        if bitmap:
            contexts += (DIRTY_CONTEXT_PREFIX + bitmap,)
        self._contexts = contexts
        self._control = self._connect()

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._clients)

    @property
    def size_bytes(self) -> int:
        return self._control.size_bytes

    def _connect(self) -> NbdClient:
        client = NbdClient.connect_unix(self.socket_path, self.export_name, self._contexts)
        with self._lock:
            self._clients.append(client)
        return client

    def allocated_extents(self) -> Iterator[tuple[int, int]]:
        unreadable = protocol.STATE_HOLE | protocol.STATE_ZERO
        yield from _runs(self._control.extents(protocol.BASE_ALLOCATION), unreadable, 0)

    def dirty_extents(self) -> list[tuple[int, int]]:
        """Extents marked dirty in the exported bitmap."""
        assert self.bitmap is not None
        context = DIRTY_CONTEXT_PREFIX + self.bitmap
        return list(_runs(self._control.extents(context), DIRTY, DIRTY))

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


def _runs(
    extents: Iterator[tuple[int, int, int]], mask: int, want: int
) -> Iterator[tuple[int, int]]:
    """Coalesced (offset, length) runs of extents whose `flags & mask == want`."""
    start = end = -1
    for offset, length, flags in extents:
        if flags & mask != want:
            continue
        if offset == end:
            end += length
            continue
        if end > start:
            yield start, end - start
        start, end = offset, offset + length
    if end > start:
        yield start, end - start
