"""Write sessions: the only way data enters a repository.

Order of durability, which is what keeps a killed backup harmless:
  1. `sessions/<id>` is written (so a concurrent prune knows a writer is active); only then is
     the index the session dedups against brought up to date (`Repository.refresh_index`), so
     a repository object used by several sessions in a row never lends a session index state
     from before it registered;
  2. packs are uploaded; only after a pack is stored is it recorded in an index object;
  3. the snapshot manifest is written after every index object it depends on;
  4. the session object is removed.
A session's own new chunks are dedup targets only for itself (reserved) until their index object
is stored; then they are published into the repository's index. An aborted session publishes
nothing it had not indexed yet: its unindexed packs are garbage for prune, never reused.
While it runs, a session rewrites its object every `heartbeat_s` (`$E3BACKUP_HEARTBEAT_S`, default
60 s): prune (repo/gc.py) keeps data a running backup may use for as long as it heartbeats. At
commit, a session whose object was removed by prune (it looked dead) refuses to write the
snapshot, and if prune rewrote the index since the session loaded it, every chunk the snapshot
references is checked against the current index and re-indexed when needed.
A crash at any point leaves complete objects only: packs nobody indexes (garbage for prune) or
indexed chunks no snapshot references yet (reused by a later session that loads them after it
registered).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

import blake3
import numpy as np

from e3backup.core.cancel import run_in_context
from e3backup.core.errors import E3Error, IntegrityError, ObjectNotFound, StorageError
from e3backup.core.ids import new_id
from e3backup.repo import formats
from e3backup.repo.chunk_index import ChunkLocation
from e3backup.repo.index_file import encode_index
from e3backup.repo.manifest import Snapshot
from e3backup.repo.pack import PackBuilder, PackEntry
from e3backup.repo.repository import IndexView, Repository, hostname

log = logging.getLogger(__name__)

DEFAULT_PACK_BYTES = 16 * 1024 * 1024
INDEX_FLUSH_PACKS = 32
MAX_PACKS_IN_MEMORY = 4
DEFAULT_HEARTBEAT_S = 60.0
HEARTBEAT_ENV = "E3BACKUP_HEARTBEAT_S"


def heartbeat_interval_s() -> float:
    return float(os.environ.get(HEARTBEAT_ENV) or DEFAULT_HEARTBEAT_S)


class WriteSession:
    """Thread-safe: many pipeline workers call `store` concurrently."""

    def __init__(
        self,
        repo: Repository,
        pack_target_bytes: int = DEFAULT_PACK_BYTES,
        upload_parallelism: int | None = None,
        dedup: bool = True,
    ) -> None:
        """`dedup=False`: a session that only adds blobs it chose itself (prune's repacking,
        repairs) registers without loading the index."""
        self.repo = repo
        self.id = new_id()
        self.pack_target_bytes = pack_target_bytes
        parallelism = upload_parallelism or repo.backend.properties().parallelism
        self._uploads = ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="upload")
        # Sealed packs held in memory at once: bounds RSS whatever the upload parallelism.
        self._slots = threading.BoundedSemaphore(min(parallelism, MAX_PACKS_IN_MEMORY))
        self._lock = threading.Lock()
        self._reserved: set[bytes] = set()  # stored or being stored here, not yet published
        self._builder = PackBuilder()
        self._pending: list[Future[list[tuple[bytes, ChunkLocation]]]] = []
        self._unindexed: list[tuple[bytes, ChunkLocation]] = []
        self._unindexed_packs = 0
        self._error: BaseException | None = None
        self.bytes_uploaded = 0
        self.started_at = datetime.now(UTC)
        self._closed = False
        self._stop_heartbeat = threading.Event()
        self.expired = False
        self._index_keys: set[str] = set()  # index objects this session wrote
        self._write_session_object()
        # After registering: see repo/gc.py, the safety rule.
        self._view: IndexView | None = repo.refresh_index() if dedup else None
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, daemon=True)
        self._heartbeat.start()

    # --- storing --------------------------------------------------------------------------------

    def store(self, blob_type: int, data: bytes, chunk_id: bytes) -> int:
        """Store a blob unless the repository already has it; returns encoded bytes added."""
        if not self.reserve(chunk_id):
            return 0
        blob = self.repo.codec.encode(data, chunk_id)
        self.add_blob(blob_type, chunk_id, blob, len(data))
        return len(blob)

    def reserve(self, chunk_id: bytes) -> bool:
        """True if the caller must encode and `add_blob` this chunk; False if it is stored
        already (or being stored by this session)."""
        self._raise_upload_error()
        with self._lock:
            if chunk_id in self._reserved or chunk_id in self._dedup_view().index:
                return False
            self._reserved.add(chunk_id)
            return True

    def add_blob(self, blob_type: int, chunk_id: bytes, blob: bytes, raw_length: int) -> None:
        """Append an encoded blob to the current pack (packs keep the order of calls)."""
        full: PackBuilder | None = None
        with self._lock:
            self._builder.add(blob_type, chunk_id, blob, raw_length)
            if self._builder.size_bytes >= self.pack_target_bytes:
                full, self._builder = self._builder, PackBuilder()
        if full is not None:
            self._submit(full)

    def _submit(self, builder: PackBuilder) -> None:
        self._slots.acquire()
        try:
            # In the caller's context: a cancel bound by the engine reaches the upload's waits.
            future = self._uploads.submit(run_in_context(self._upload_pack), builder)
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self._pending.append(future)
        self._collect(block=False)

    def _upload_pack(self, builder: PackBuilder) -> list[tuple[bytes, ChunkLocation]]:
        try:
            pack_id, data, entries = builder.finish(self.repo.codec)
            self.repo.backend.put(formats.pack_key(pack_id), memoryview(data))
            with self._lock:
                self.bytes_uploaded += len(data)
            return [(e.chunk_id, _location(pack_id, e)) for e in entries]
        finally:
            self._slots.release()

    def _collect(self, block: bool) -> None:
        """Queue finished uploads for the index; write an index object every few packs."""
        with self._lock:
            pending = self._pending
            done = [f for f in pending if block or f.done()]
            self._pending = [f for f in pending if f not in done]
        for future in done:
            try:
                entries = future.result()
            except BaseException as exc:
                self._error = self._error or exc
                continue
            with self._lock:
                self._unindexed.extend(entries)
                self._unindexed_packs += 1
        if self._unindexed_packs >= INDEX_FLUSH_PACKS or (block and self._unindexed):
            self._write_index()
        self._raise_upload_error()

    def _raise_upload_error(self) -> None:
        if self._error is not None:
            if isinstance(self._error, E3Error):
                raise self._error
            raise StorageError(f"upload failed: {self._error}") from self._error

    def _write_index(self) -> None:
        with self._lock:
            entries, self._unindexed, self._unindexed_packs = self._unindexed, [], 0
        if not entries:
            return
        payload = encode_index(entries)
        key = formats.INDEX_PREFIX + blake3.blake3(payload).hexdigest()
        self.repo.backend.put(key, self.repo.codec.encode(payload, key.encode()))
        # Durable now: dedup targets for every session (published before un-reserving, so a
        # concurrent `reserve` always finds the chunk in one of the two).
        self.repo.publish_index_object(key, entries, self._view)
        with self._lock:
            self._index_keys.add(key)
            self._reserved.difference_update(cid for cid, _ in entries)
        self._beat()  # doubles as the heartbeat

    def flush(self) -> None:
        """Upload the partial pack and wait until everything stored so far is indexed."""
        with self._lock:
            builder, self._builder = self._builder, PackBuilder()
        if len(builder):
            self._submit(builder)
        self._collect(block=True)

    # --- finishing ------------------------------------------------------------------------------

    def commit(self, snapshot: Snapshot) -> None:
        """Make the snapshot durable: everything it references is indexed before it is written."""
        self.flush()
        self._raise_if_expired()
        key = formats.SNAPSHOTS_PREFIX + snapshot.id
        self.repo.backend.put(key, self.repo.codec.encode(snapshot.to_json(), key.encode()))
        # After the put, not before: a prune that listed snapshots before it may unindex what
        # the snapshot uses up to now, and one that lists after sees it (gc.py, the safety rule).
        try:
            self._reindex_after_commit(snapshot)
        except BaseException:
            self.repo.backend.delete(key)
            raise
        self.close()

    def abort(self) -> None:
        """Stop: queued uploads are dropped, running ones finish, and nothing that was not
        indexed yet is indexed or published (packs nobody indexes are garbage for prune)."""
        if self._closed:
            return
        with self._lock:
            self._builder = PackBuilder()
            self._unindexed, self._reserved = [], set()
        self._close(cancel_uploads=True)

    def close(self) -> None:
        self._close(cancel_uploads=False)

    def _close(self, cancel_uploads: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_heartbeat.set()
        self._uploads.shutdown(wait=True, cancel_futures=cancel_uploads)
        self.repo.backend.delete(self._session_key)

    @property
    def _session_key(self) -> str:
        return formats.SESSIONS_PREFIX + self.id

    def _write_session_object(self) -> None:
        doc = {
            "id": self.id,
            "hostname": hostname(),
            "started_at": self.started_at.isoformat(),
            "heartbeat_at": datetime.now(UTC).isoformat(),
            "heartbeat_unix": time.time(),
            "started_unix": self.started_at.timestamp(),
        }
        key = self._session_key
        self.repo.backend.put(key, self.repo.codec.encode(json.dumps(doc).encode(), key.encode()))

    def _heartbeat_loop(self) -> None:
        interval = heartbeat_interval_s()
        while not self._stop_heartbeat.wait(interval) and not self.expired:
            try:
                self._beat()
            except E3Error as exc:
                log.warning("session heartbeat failed: %s", exc)

    def _beat(self) -> None:
        """Refresh the session object, unless prune removed it (then the session is expired)."""
        if self.expired:
            return
        try:
            self.repo.backend.stat(self._session_key)
        except ObjectNotFound:
            self.expired = True  # prune took this session for dead: never resurrect it
            return
        self._write_session_object()

    def _raise_if_expired(self) -> None:
        """Refuse to commit if prune declared this session dead."""
        try:
            self.repo.backend.stat(self._session_key)
        except ObjectNotFound:
            self.expired = True
        if self.expired:
            raise IntegrityError(
                "the write session expired (no heartbeat within prune's grace period); "
                "no snapshot was written: run the backup again"
            )

    def _reindex_after_commit(self, snapshot: Snapshot) -> None:
        """Re-index chunks of the snapshot a concurrent prune took out of the index (their packs
        are kept while this session is live)."""
        # Prune may have unindexed what this session loaded *or* what it wrote itself (indexed
        # chunks that no snapshot referenced yet look like garbage).
        relied_on = self._dedup_view().keys | self._index_keys
        if relied_on <= self.repo.index_keys():
            return
        fresh = self.repo.read_index_view()
        missing: dict[bytes, ChunkLocation] = {}
        for ids in self._referenced(snapshot):
            named = np.frombuffer(ids, dtype=np.uint8).reshape(-1, formats.ID_BYTES).any(axis=1)
            for i in np.flatnonzero(named & ~fresh.index.contains_many(ids)):
                chunk_id = ids[i * formats.ID_BYTES : (i + 1) * formats.ID_BYTES]
                missing[chunk_id] = self._locate(chunk_id)
        for pack_id in {loc.pack_id for loc in missing.values()}:
            try:
                self.repo.backend.stat(formats.pack_key(pack_id))
            except ObjectNotFound:
                raise IntegrityError(
                    f"pack {pack_id.hex()[:16]} was pruned while this backup used it; "
                    "no snapshot was written: run the backup again"
                ) from None
        if missing:
            log.info("re-indexing %d chunk(s) a concurrent prune unindexed", len(missing))
            with self._lock:
                self._unindexed.extend(missing.items())
            self._write_index()

    def _dedup_view(self) -> IndexView:
        if self._view is None:
            raise RuntimeError("this write session was opened with dedup=False")
        return self._view

    def _locate(self, chunk_id: bytes) -> ChunkLocation:
        loc = self._dedup_view().index.get(chunk_id)
        if loc is None:
            raise IntegrityError(f"chunk {chunk_id.hex()[:16]} is referenced but not in the index")
        return loc

    def _referenced(self, snapshot: Snapshot) -> Iterator[bytes]:
        """Every page id of the snapshot followed by the chunk ids that page names, as
        concatenated ids (one batch per page), located through this session's view."""
        for disk in snapshot.disks:
            for page_hex in disk.pages:
                page_id = bytes.fromhex(page_hex)
                loc = self._locate(page_id)
                blob = self.repo.read_pack_range(loc.pack_id, loc.offset, loc.length)
                page = self.repo.decode_chunk(blob, page_id, loc)
                if len(page) % formats.ID_BYTES:
                    raise IntegrityError(f"index page {page_hex[:16]} has a partial entry")
                yield page_id + page


def _location(pack_id: bytes, entry: PackEntry) -> ChunkLocation:
    return ChunkLocation(pack_id, entry.blob_type, entry.offset, entry.length, entry.raw_length)
