"""Disk indexes: a disk as the ordered list of its chunk ids, stored as content-addressed pages.

Pages of `PAGE_ENTRIES` ids are stored like chunks (blob type PAGE), so regions of a disk that
did not change between snapshots share their pages, and every snapshot's index is complete on
its own: restoring any backup point never walks a chain.
"""

from __future__ import annotations

from collections.abc import Iterator

from e3backup.repo import formats
from e3backup.repo.manifest import DiskRecord
from e3backup.repo.repository import Repository
from e3backup.repo.session import WriteSession


class DiskIndexWriter:
    """Receives chunk ids in disk order and stores full pages as it goes (bounded memory)."""

    def __init__(self, session: WriteSession) -> None:
        self._session = session
        self._page = bytearray()
        self.page_ids: list[str] = []
        self.count = 0

    def append(self, chunk_id: bytes) -> None:
        self._page += chunk_id
        self.count += 1
        if len(self._page) == formats.PAGE_ENTRIES * formats.ID_BYTES:
            self._store_page()

    def finish(self) -> list[str]:
        if self._page:
            self._store_page()
        return self.page_ids

    def _store_page(self) -> None:
        page = bytes(self._page)
        page_id = self._session.repo.codec.chunk_id(page)
        self._session.store(formats.BLOB_PAGE, page, page_id)
        self.page_ids.append(page_id.hex())
        self._page = bytearray()


class ParentIndexCursor:
    """Random-ish access to a parent disk's chunk ids, for a reader that moves forward."""

    def __init__(self, repo: Repository, disk: DiskRecord) -> None:
        self._ids: Iterator[bytes] = repo.disk_chunk_ids(disk)
        self._position = 0
        self._current = formats.ZERO_ID
        self.count = -(-disk.size_bytes // disk.chunk_size)

    def get(self, chunk_no: int) -> bytes:
        """The parent's id for chunk `chunk_no`; calls must not go backwards."""
        if chunk_no < self._position - 1:
            raise ValueError("ParentIndexCursor only moves forward")
        while self._position <= chunk_no:
            self._current = next(self._ids)
            self._position += 1
        return self._current
