"""Opening a repository and reading from it: config, keys, the chunk index, snapshots, chunks."""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from e3backup.core.errors import (
    IntegrityError,
    ObjectNotFound,
    RangeOutsideObject,
    RepositoryExists,
    RepositoryNotFound,
    SnapshotNotFound,
    UsageError,
)
from e3backup.core.ids import new_id
from e3backup.repo import formats, keys
from e3backup.repo.blob import BlobCodec
from e3backup.repo.chunk_index import ChunkIndex, ChunkLocation, IndexEntries
from e3backup.repo.config import DEFAULT_CHUNK_SIZE, RepoConfig
from e3backup.repo.damaged_blobs import read_damaged
from e3backup.repo.index_file import decode_index, read_index_objects
from e3backup.repo.manifest import DiskRecord, Snapshot
from e3backup.storage.backend import Backend

log = logging.getLogger(__name__)


class IndexView:
    """A chunk index and the index objects it holds (a set that grows as sessions publish).
    Entries of `damaged` (chunk id, pack id) pairs were left out when the objects were read."""

    def __init__(self, damaged: set[tuple[bytes, bytes]]) -> None:
        self.index = ChunkIndex()
        self.damaged = frozenset(damaged)
        self._damaged_packs = dict(damaged)
        self._keys: set[str] = set()
        self._lock = threading.Lock()

    @property
    def keys(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._keys)

    def add(self, key: str, entries: list[tuple[bytes, ChunkLocation]]) -> None:
        with self._lock:  # the key first: a reader of `keys` may rely on more, never on less
            self._keys.add(key)
        self.index.add_many(entries)

    def add_objects(self, objects: Iterable[tuple[str, IndexEntries]]) -> None:
        """Index objects read as rows, in one bulk add (one sort when the view is new)."""

        def parts() -> Iterator[IndexEntries]:
            for key, entries in objects:
                with self._lock:
                    self._keys.add(key)
                yield entries.without(self.damaged)

        # A refresh of a view in use reads first: lookups must not wait for storage.
        self.index.add_bulk(parts() if not len(self.index) else list(parts()))

    def damaged_pack(self, chunk_id: bytes) -> bytes | None:
        return self._damaged_packs.get(chunk_id)


class Repository:
    """An open repository. Reads are thread-safe; writes go through `WriteSession`."""

    def __init__(self, backend: Backend, config: RepoConfig, master: keys.MasterKeys) -> None:
        self.backend = backend
        self.config = config
        self.codec = BlobCodec(master, config.compression_level)
        self._view: IndexView | None = None
        self._view_lock = threading.RLock()

    # --- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        backend: Backend,
        password: str | None,
        encryption: str = "aes-256-gcm",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        compression_level: int = 3,
    ) -> Repository:
        if _exists(backend, formats.CONFIG_KEY):
            raise RepositoryExists(
                f"a repository already exists at {backend.properties().location}"
            )
        if any(True for _ in backend.list("")):
            raise RepositoryExists(
                f"{backend.properties().location} is not empty; refusing to create a repository"
            )
        encrypted = encryption != "none"
        if encrypted and not password:
            raise UsageError("an encrypted repository needs a password")
        master = keys.MasterKeys.generate(encrypted)
        repo_id = new_id()
        config = RepoConfig(
            format_version=formats.FORMAT_VERSION,
            repo_id=repo_id,
            chunk_size=chunk_size,
            encryption=encryption,
            compression_level=compression_level,
            id_key=None if encrypted else master.id_key.hex(),
        )
        if encrypted:
            assert password is not None
            keys.add_key_file(backend, master, password, repo_id)
        backend.put(formats.CONFIG_KEY, config.to_json())  # last: its presence means "ready"
        return cls(backend, config, master)

    @classmethod
    def open(cls, backend: Backend, password: str | Callable[[], str] | None) -> Repository:
        """Open an existing repository; `password` may be a callable asked only if needed."""
        try:
            config = RepoConfig.from_json(backend.get(formats.CONFIG_KEY))
        except ObjectNotFound:
            raise RepositoryNotFound(
                f"no repository at {backend.properties().location} (create one with 'repo init')"
            ) from None
        if config.encryption == "none":
            assert config.id_key is not None
            return cls(backend, config, keys.MasterKeys(None, bytes.fromhex(config.id_key)))
        if callable(password):
            password = password()
        if not password:
            raise UsageError("this repository is encrypted: a password is required")
        _key, master = keys.unlock(backend, password, config.repo_id)
        return cls(backend, config, master)

    def close(self) -> None:
        self.backend.close()

    # --- chunk index ----------------------------------------------------------------------------

    @property
    def index(self) -> ChunkIndex:
        """The chunk index for reading (loaded on first use). Writers dedup against the view
        `refresh_index` gives them instead."""
        return self._current_view().index

    @property
    def loaded_index_keys(self) -> frozenset[str]:
        """The index objects the current view holds (empty before the index is loaded)."""
        view = self._view
        return view.keys if view is not None else frozenset()

    def drop_cached_index(self) -> None:
        """Forget the loaded index; the next use loads it again (after check recorded damage)."""
        with self._view_lock:
            self._view = None

    def refresh_index(self) -> IndexView:
        """The index a write session dedups against, brought up to date *after* the session
        registered (repo/gc.py, the safety rule): index objects written since the view was
        loaded are added; if an object the view holds is gone (a prune superseded it) or the
        damaged-blob records changed, the view is rebuilt from the current objects. A session
        keeps the view it got, even if a later session's refresh replaces the repository's."""
        with self._view_lock:
            damaged = self.damaged_blobs()
            view, listed = self._view, self.index_keys()
            if view is None or view.damaged != damaged or not view.keys <= listed:
                if view is not None:
                    log.info("the index changed since it was loaded (prune, check): reloading")
                view = self._view = IndexView(damaged)
            self._load_objects(view, listed)
            return view

    def publish_index_object(
        self, key: str, entries: list[tuple[bytes, ChunkLocation]], view: IndexView | None
    ) -> None:
        """Entries of an index object a session has just stored durably: from now on they are
        dedup targets for every session of this process (`view`: the session's own)."""
        if view is not None:
            view.add(key, entries)
        current = self._view
        if current is not None and current is not view:
            current.add(key, entries)

    def damaged_blobs(self) -> set[tuple[bytes, bytes]]:
        """(chunk id, pack id) pairs a check recorded as damaged (kept out of the index)."""
        return read_damaged(self.backend, self.codec)[1]

    def read_index_view(self, damaged: set[tuple[bytes, bytes]] | None = None) -> IndexView:
        """Every current index object, read now (without `damaged`, damage is not filtered)."""
        view = IndexView(damaged or set())
        self._load_objects(view, self.index_keys())
        return view

    def _current_view(self) -> IndexView:
        with self._view_lock:
            if self._view is None:
                self._view = self.read_index_view(self.damaged_blobs())
            return self._view

    def index_keys(self) -> set[str]:
        """The index objects stored now."""
        return {info.key for info in self.backend.list(formats.INDEX_PREFIX)}

    def _load_objects(self, view: IndexView, listed: set[str]) -> None:
        """Add the listed objects the view lacks. One that a concurrent prune deleted while we
        read was superseded by objects written before the delete, so list again and read the
        new ones. Entries of blobs a check recorded as damaged are left out, so dedup stores a
        fresh copy (see repo/verification.py)."""
        attempted = set(view.keys)
        workers = self.backend.properties().parallelism
        while names := sorted(listed - attempted):
            attempted.update(names)
            gone: list[str] = []

            def present(
                names: list[str] = names, gone: list[str] = gone
            ) -> Iterator[tuple[str, IndexEntries]]:
                for key, entries in read_index_objects(self.backend, self.codec, names, workers):
                    if entries is None:
                        gone.append(key)
                    else:
                        yield key, entries

            view.add_objects(present())
            if not gone:
                break
            listed = self.index_keys()
        log.debug("index: %d objects, %d chunks", len(view.keys), len(view.index))

    def read_index_object(self, key: str) -> list[tuple[bytes, ChunkLocation]]:
        data = self.codec.decode(self.backend.get(key), key.encode())
        try:
            return list(decode_index(data))
        except IntegrityError as exc:
            raise IntegrityError(f"{key}: {exc}") from None

    # --- reading chunks -------------------------------------------------------------------------

    def locate(self, chunk_id: bytes) -> ChunkLocation:
        view = self._current_view()
        loc = view.index.get(chunk_id)
        if loc is None:
            damaged_pack = view.damaged_pack(chunk_id)
            if damaged_pack is not None:
                raise IntegrityError(
                    f"chunk {chunk_id.hex()[:16]} is damaged (check found it corrupt in pack "
                    f"{damaged_pack.hex()[:16]}; a new backup stores it again)"
                )
            raise IntegrityError(f"chunk {chunk_id.hex()[:16]} is referenced but not in the index")
        return loc

    def read_chunk(self, chunk_id: bytes) -> bytes:
        loc = self.locate(chunk_id)
        blob = self.read_pack_range(loc.pack_id, loc.offset, loc.length)
        return self.decode_chunk(blob, chunk_id, loc)

    def read_pack_range(self, pack_id: bytes, offset: int, length: int) -> bytes:
        """Bytes of an indexed pack; a pack that is gone or too short is damage, not a glitch."""
        key = formats.pack_key(pack_id)
        try:
            data = self.backend.get(key, offset, length)
        except ObjectNotFound:
            raise IntegrityError(f"pack {pack_id.hex()[:16]} is missing ({key})") from None
        except RangeOutsideObject as exc:
            raise IntegrityError(f"pack {pack_id.hex()[:16]} is truncated: {exc}") from None
        if len(data) != length:
            raise IntegrityError(f"pack {pack_id.hex()[:16]} is truncated ({key})")
        return data

    def decode_chunk(self, blob: bytes | memoryview, chunk_id: bytes, loc: ChunkLocation) -> bytes:
        try:
            data = self.codec.decode_chunk(blob, chunk_id)
        except IntegrityError as exc:
            raise IntegrityError(f"pack {loc.pack_id.hex()[:16]}: {exc}") from None
        if len(data) != loc.raw_length:
            raise IntegrityError(f"chunk {chunk_id.hex()[:16]} has an unexpected length")
        return data

    def disk_chunk_ids(self, disk: DiskRecord, pages_ahead: int = 0) -> Iterator[bytes]:
        """The chunk ids of a disk in order (ZERO_ID for all-zero chunks), one page at a time;
        with `pages_ahead`, that many pages are fetched in parallel ahead of the consumer."""
        for page in self.disk_pages(disk, pages_ahead):
            for pos in range(0, len(page), formats.ID_BYTES):
                yield page[pos : pos + formats.ID_BYTES]

    def disk_pages(self, disk: DiskRecord, pages_ahead: int = 0) -> Iterator[bytes]:
        """The disk's index pages in order (concatenated chunk ids, for batched lookups such as
        `index.locate_many`); the ids in all of them must cover the disk's size."""
        count = -(-disk.size_bytes // disk.chunk_size)
        produced = 0
        for page_hex, page in self._pages(disk, pages_ahead):
            if len(page) % formats.ID_BYTES:
                raise IntegrityError(f"index page {page_hex[:16]} has a partial entry")
            yield page
            produced += len(page) // formats.ID_BYTES
        if produced != count:
            raise IntegrityError(
                f"disk {disk.name}: index has {produced} chunks, expected {count} for its size"
            )

    def _pages(self, disk: DiskRecord, ahead: int) -> Iterator[tuple[str, bytes]]:
        if ahead <= 0:
            for page_hex in disk.pages:
                yield page_hex, self.read_chunk(bytes.fromhex(page_hex))
            return
        pages = iter(disk.pages)
        # Two fetchers: enough to hide latency without crowding the backend's connection pool.
        with ThreadPoolExecutor(2, thread_name_prefix="index-pages") as pool:
            window: deque[tuple[str, Future[bytes]]] = deque()

            def fetch_next() -> None:
                page_hex = next(pages, None)
                if page_hex is not None:
                    future = pool.submit(self.read_chunk, bytes.fromhex(page_hex))
                    window.append((page_hex, future))

            for _ in range(ahead):
                fetch_next()
            while window:
                page_hex, future = window.popleft()
                fetch_next()
                yield page_hex, future.result()

    # --- snapshots ------------------------------------------------------------------------------

    def snapshot_ids(self) -> list[str]:
        return [info.key.rsplit("/", 1)[1] for info in self.backend.list(formats.SNAPSHOTS_PREFIX)]

    def load_snapshot(self, snapshot_id: str) -> Snapshot:
        key = formats.SNAPSHOTS_PREFIX + snapshot_id
        try:
            data = self.codec.decode(self.backend.get(key), key.encode())
        except ObjectNotFound:
            raise SnapshotNotFound(f"snapshot {snapshot_id} not found") from None
        snapshot = Snapshot.from_json(data)
        if snapshot.id != snapshot_id:
            raise IntegrityError(f"snapshot object {snapshot_id} holds snapshot {snapshot.id}")
        return snapshot

    def list_snapshots(self) -> list[Snapshot]:
        """All snapshots, oldest first."""
        ids = self.snapshot_ids()
        with ThreadPoolExecutor(max_workers=self.backend.properties().parallelism) as pool:
            found = list(pool.map(self._load_if_present, ids))
        snapshots = [s for s in found if s is not None]
        return sorted(snapshots, key=lambda s: (s.time, s.id))

    def _load_if_present(self, snapshot_id: str) -> Snapshot | None:
        try:
            return self.load_snapshot(snapshot_id)
        except SnapshotNotFound:  # forgotten between the listing and the read
            return None

    def find_snapshot(self, ref: str, source_id: str | None = None) -> Snapshot:
        """Resolve 'latest', a full id or a unique id prefix (≥ 4 hex digits)."""
        if ref == "latest":
            candidates = [s for s in self.list_snapshots() if source_id in (None, s.source_id)]
            if not candidates:
                raise SnapshotNotFound("the repository has no snapshots yet")
            return candidates[-1]
        if len(ref) < 4 or any(c not in "0123456789abcdef" for c in ref.lower()):
            raise UsageError(
                f"{ref!r} is not a snapshot id (use 'latest' or an id from 'snapshots')"
            )
        matches = [sid for sid in self.snapshot_ids() if sid.startswith(ref.lower())]
        if not matches:
            raise SnapshotNotFound(f"no snapshot with id {ref}")
        if len(matches) > 1:
            raise UsageError(f"snapshot id prefix {ref} is ambiguous ({len(matches)} matches)")
        return self.load_snapshot(matches[0])

    def latest_for_source(self, source_id: str) -> Snapshot | None:
        try:
            return self.find_snapshot("latest", source_id)
        except SnapshotNotFound:
            return None


def _exists(backend: Backend, key: str) -> bool:
    try:
        backend.stat(key)
    except ObjectNotFound:
        return False
    return True


def hostname() -> str:
    return os.environ.get("E3BACKUP_HOSTNAME") or _platform_node()


def _platform_node() -> str:
    import platform

    return platform.node() or "localhost"
