"""Prune, forget and their overlaps, on the memory, local and S3 backends.

One test per row of the overlap table in `e3backup.repo.gc`, plus the basic behaviour of each
step. Interleavings are driven step by step (a write session held open across a prune); "later"
is a prune whose clock runs ahead. Backups and sessions use ONE long-lived repository object, as
a VM job or an agent does (a fresh object per backup hid issue 8's blocker 2); prune, check and
restore get their own (`fresh`: another process).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from e3backup.core.errors import IntegrityError, SourceError
from e3backup.engines import vm_result as ev
from e3backup.engines.image_backup import backup_image, restore_disk
from e3backup.engines.vm_backup import VmBackupJob, VmBackupOptions
from e3backup.engines.vm_result import VmEvent
from e3backup.repo import formats
from e3backup.repo.check import check_repository
from e3backup.repo.gc import PruneOptions, PruneReport, prune
from e3backup.repo.manifest import DiskRecord, Snapshot
from e3backup.repo.repository import Repository
from e3backup.repo.session import WriteSession
from e3backup.repo.tombstones import forget_snapshot, read_tombstones
from e3backup.sources.hypervisors.base import ConsistencyLevel, DiskView, VmDisk, VmInfo
from e3backup.sources.image import RawImageReader
from e3backup.storage.backend import Backend

CHUNK = 64 * 1024
GRACE = 1000.0


@pytest.fixture
def backend(repo_backend: Backend) -> Backend:
    return repo_backend  # memory, local and s3 (tests/conftest.py)


@pytest.fixture
def repo(backend: Backend) -> Repository:
    Repository.init(backend, None, "none", chunk_size=CHUNK)
    return Repository.open(backend, None)


def fresh(repo: Repository) -> Repository:
    """A new process's view of the repository (its own index)."""
    return Repository.open(repo.backend, None)


def later(seconds: float = GRACE + 1) -> PruneOptions:
    return PruneOptions(grace_s=GRACE, clock=lambda: time.time() + seconds)


def image(tmp_path: Path, name: str, seed: int, chunks: int = 12) -> Path:
    path = tmp_path / name
    data = bytearray()
    for i in range(chunks):
        data += bytes([(seed * 31 + i) % 251 + 1]) * CHUNK
    path.write_bytes(bytes(data))
    return path


def backup(repo: Repository, path: Path) -> Snapshot:
    with RawImageReader.open(path) as reader:
        return backup_image(repo, path, reader)


def restores(repo: Repository, snapshot: Snapshot, original: bytes, tmp_path: Path) -> bool:
    target = tmp_path / f"restore-{snapshot.id}"
    restore_disk(fresh(repo), snapshot, None, target)
    ok = target.read_bytes() == original
    target.unlink()
    return ok


def write_snapshot(session: WriteSession, chunks: list[bytes], name: str = "d") -> Snapshot:
    """Commit a one-disk snapshot of `chunks` through `session` (pages and all)."""
    codec = session.repo.codec
    ids = []
    for data in chunks:
        cid = codec.chunk_id(data)
        session.store(formats.BLOB_DATA, data, cid)
        ids.append(cid)
    page = b"".join(ids)
    page_id = codec.chunk_id(page)
    session.store(formats.BLOB_PAGE, page, page_id)
    disk = DiskRecord(name, len(chunks) * CHUNK, CHUNK, [page_id.hex()])
    snap = Snapshot(os.urandom(8).hex(), "2024-01-01T00:00:00+00:00", "h", "image", "s", "s",
                    "Full", None, [disk])  # fmt: skip
    session.commit(snap)
    return snap


def pack_keys(repo: Repository) -> set[str]:
    return {info.key for info in repo.backend.list(formats.PACKS_PREFIX)}


# --- basic behaviour ------------------------------------------------------------------------------


def test_forget_then_prune_frees_space_after_grace(repo: Repository, tmp_path: Path) -> None:
    a, b = image(tmp_path, "a.img", 1), image(tmp_path, "b.img", 2)
    snap_a, snap_b = backup(repo, a), backup(repo, b)
    forget_snapshot(repo, snap_a, time.time)
    assert repo.snapshot_ids() == [snap_b.id]
    before = pack_keys(repo)
    now = prune(repo, PruneOptions(grace_s=GRACE))
    assert now.packs_deleted == 0 and pack_keys(repo) == before  # young tombstone: a root
    first = prune(repo, later())  # tombstone old: a's packs leave the index
    assert first.packs_unindexed >= 1 and first.packs_deleted == 0
    assert restores(repo, snap_b, b.read_bytes(), tmp_path)  # packs still readable
    second = prune(repo, later(2 * GRACE + 2))  # one more grace period: deleted
    assert second.packs_deleted == first.packs_unindexed
    assert len(pack_keys(repo)) < len(before)
    assert restores(repo, snap_b, b.read_bytes(), tmp_path)
    assert check_repository(fresh(repo), read_data=True).ok
    snaps, packs = read_tombstones(repo)
    assert snaps == [] and packs == []


def test_repack_keeps_live_blobs_of_mostly_garbage_packs(repo: Repository, tmp_path: Path) -> None:
    session = WriteSession(repo)
    shared = [os.urandom(CHUNK)]
    garbage = [os.urandom(CHUNK) for _ in range(5)]
    keep = write_snapshot(session, shared)  # one pack: shared chunk + page
    session = WriteSession(repo)
    gone = write_snapshot(session, shared + garbage, "e")
    forget_snapshot(repo, gone, lambda: time.time() - 2 * GRACE)
    assert prune(repo, later()).packs_unindexed >= 1
    prune(repo, later(2 * GRACE + 2))
    assert check_repository(fresh(repo), read_data=True).ok
    again = fresh(repo)
    assert again.read_chunk(again.codec.chunk_id(shared[0])) == shared[0]
    assert keep.id in again.snapshot_ids()


def test_mixed_pack_is_repacked(repo: Repository) -> None:
    live, dead = os.urandom(CHUNK), [os.urandom(CHUNK) for _ in range(6)]
    session = WriteSession(repo, pack_target_bytes=64 * 1024 * 1024)  # one pack for all
    snap_dead = write_snapshot(session, [live, *dead], "x")
    session = WriteSession(repo)
    snap_live = write_snapshot(session, [live], "y")  # dedups: its data chunk is in the big pack
    forget_snapshot(repo, snap_dead, lambda: time.time() - 2 * GRACE)
    report = prune(repo, later())
    assert report.packs_repacked >= 1 and report.blobs_copied >= 1
    prune(repo, later(2 * GRACE + 2))
    assert check_repository(fresh(repo), read_data=True).ok
    assert fresh(repo).read_chunk(repo.codec.chunk_id(live)) == live
    assert snap_live.id in repo.snapshot_ids()


def test_dry_run_changes_nothing(repo: Repository, tmp_path: Path) -> None:
    snap = backup(repo, image(tmp_path, "a.img", 1))
    forget_snapshot(repo, snap, lambda: time.time() - 2 * GRACE)
    objects = {info.key for info in repo.backend.list("")}
    report = prune(repo, PruneOptions(grace_s=GRACE, dry_run=True))
    assert report.packs_unindexed >= 1
    assert {info.key for info in repo.backend.list("")} == objects


# --- one test per row of the overlap table -------------------------------------------------------


def test_row_backup_backup(repo: Repository) -> None:
    """Two sessions store the same chunks concurrently; both snapshots are whole."""
    data = [os.urandom(CHUNK) for _ in range(4)]
    s1, s2 = WriteSession(repo), WriteSession(fresh(repo))  # one process and another
    snaps = [write_snapshot(s1, data, "a"), write_snapshot(s2, data, "b")]
    prune(repo, later())
    prune(repo, later(2 * GRACE + 2))
    report = check_repository(fresh(repo), read_data=True)
    assert report.ok and report.snapshots_checked == len(snaps)


def test_row_backup_forget(repo: Repository, tmp_path: Path) -> None:
    """A backup whose parent is forgotten (and pruned) while it runs still commits whole."""
    path = image(tmp_path, "a.img", 1)
    parent = backup(repo, path)
    writer = fresh(repo)
    chosen = writer.latest_for_source(parent.source_id)
    assert chosen is not None
    session = WriteSession(writer)
    forget_snapshot(repo, parent, time.time)
    prune(repo, later(GRACE / 2))  # tombstone young: parent data live
    ids = list(writer.disk_chunk_ids(chosen.disks[0]))  # inherits the parent's chunk ids
    session.commit(Snapshot("c" * 32, chosen.time, "h", "image", "s", "s", "Incremental",
                            chosen.id, [chosen.disks[0]]))  # fmt: skip
    for _ in range(3):
        prune(repo, later((_ + 2) * GRACE))
    again = fresh(repo)
    assert [again.read_chunk(i) for i in ids if i != formats.ZERO_ID]
    assert check_repository(again, read_data=True).ok


SHORT = 0.5  # a real grace period, for tests where a session runs through the prunes


def wait_and_prune(repo: Repository, grace: float = SHORT) -> PruneReport:
    time.sleep(grace * 1.4)
    return prune(repo, PruneOptions(grace_s=grace))


def test_row_backup_prune_unindexed_pack_of_running_backup(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pack uploaded but not yet indexed looks like garbage; the live session protects it."""
    monkeypatch.setenv("E3BACKUP_HEARTBEAT_S", "0.05")
    session = WriteSession(repo, pack_target_bytes=CHUNK)
    data = [os.urandom(CHUNK) for _ in range(3)]
    for chunk in data:
        session.store(formats.BLOB_DATA, chunk, repo.codec.chunk_id(chunk))
    while len(pack_keys(repo)) < 2:  # uploaded, not indexed yet (the index comes at flush)
        time.sleep(0.01)
    assert not list(repo.backend.list(formats.INDEX_PREFIX))
    first = prune(repo, PruneOptions(grace_s=SHORT))  # they look like garbage: step 1
    assert first.packs_unindexed >= 2 and first.live_sessions == 1
    swept = wait_and_prune(repo)  # old tombstone, but a live writer that started before it
    assert swept.packs_deleted == 0 and swept.live_sessions == 1
    snap = write_snapshot(session, data)
    for _ in range(2):
        assert wait_and_prune(repo).packs_deleted == 0
    assert check_repository(fresh(repo), read_data=True).ok
    assert snap.id in repo.snapshot_ids()


def test_row_backup_prune_dedup_race(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """The classic race: a backup deduplicates against a chunk prune unindexes meanwhile."""
    monkeypatch.setenv("E3BACKUP_HEARTBEAT_S", "0.05")
    chunk = os.urandom(CHUNK)
    old = write_snapshot(WriteSession(repo), [chunk], "old")
    forget_snapshot(repo, old, lambda: time.time() - 10)
    session = WriteSession(repo)
    assert not session.reserve(repo.codec.chunk_id(chunk))  # the index says: stored already
    first = prune(repo, PruneOptions(grace_s=SHORT))  # the chunk's pack leaves the index
    assert first.packs_unindexed >= 1
    assert wait_and_prune(repo).packs_deleted == 0  # the running session keeps the pack
    snap = write_snapshot(session, [chunk], "new")  # re-indexes the chunk at commit
    for _ in range(2):
        wait_and_prune(repo)
    again = fresh(repo)
    assert snap.id in again.snapshot_ids()
    assert again.read_chunk(repo.codec.chunk_id(chunk)) == chunk
    assert check_repository(again, read_data=True).ok


def test_row_backup_prune_grace_zero_takes_running_backups_for_dead(
    repo: Repository, tmp_path: Path
) -> None:
    """Without a grace period (`--unsafe-grace`), what happens exactly: a running backup's
    session counts as dead, so its commit refuses (no snapshot: safe), and a restore that
    loaded the index before the prune finds its packs deleted (the real loss)."""
    path = image(tmp_path, "a.img", 1)
    old = backup(repo, path)
    reader = fresh(repo)
    _ = reader.index  # a restore has started
    forget_snapshot(repo, old, time.time)
    session = WriteSession(repo)
    chunk = path.read_bytes()[:CHUNK]
    assert not session.reserve(repo.codec.chunk_id(chunk))  # deduplicated against `old`
    zero = PruneOptions(grace_s=0)
    assert prune(fresh(repo), zero).stale_sessions_removed == 1  # the live session, for dead
    assert prune(fresh(repo), zero).packs_deleted >= 1
    with pytest.raises(IntegrityError, match="the write session expired"):
        write_snapshot(session, [chunk], "new")
    assert repo.snapshot_ids() == []
    with pytest.raises(IntegrityError, match="missing"):
        restore_disk(reader, old, None, tmp_path / "out.img")


def test_row_prune_prune(repo: Repository, tmp_path: Path) -> None:
    """Prunes running at the same time (with repacking) never lose live data."""
    paths = [image(tmp_path, f"{i}.img", i) for i in range(4)]
    snaps = [backup(repo, p) for p in paths]
    for snap in snaps[:2]:
        forget_snapshot(repo, snap, lambda: time.time() - 2 * GRACE)
    errors: list[BaseException] = []

    def run(offset: float) -> None:
        try:
            for step in range(3):
                prune(fresh(repo), later(offset + step * (GRACE + 1)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i * 0.5,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    prune(repo, later(10 * GRACE))
    for snap, path in zip(snaps[2:], paths[2:], strict=True):
        assert restores(repo, snap, path.read_bytes(), tmp_path)
    assert check_repository(fresh(repo), read_data=True).ok


class _PruneRacingBackend:
    """Deletes each tombstone just before it is read, as a concurrent prune finishing does."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        if key.startswith(formats.TOMBSTONES_PREFIX):
            self.inner.delete(key)
        return self.inner.get(key, offset, length)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_row_prune_prune_tombstone_removed_while_listed(repo: Repository, tmp_path: Path) -> None:
    """A prune lists a tombstone that another prune deletes before it is read: skipped, since
    neither a finished packs tombstone nor an expired snapshot tombstone protects anything."""
    snaps = [backup(repo, image(tmp_path, f"{i}.img", i)) for i in range(2)]
    forget_snapshot(repo, snaps[0], lambda: time.time() - 2 * GRACE)
    assert prune(fresh(repo), later()).packs_unindexed >= 1  # leaves a packs tombstone
    racing = Repository.open(_PruneRacingBackend(repo.backend), None)  # type: ignore[arg-type]
    assert read_tombstones(racing) == ([], [])
    prune(racing, later(3 * GRACE))
    assert restores(fresh(repo), snaps[1], (tmp_path / "1.img").read_bytes(), tmp_path)


def test_row_check_prune(repo: Repository, tmp_path: Path) -> None:
    """A check whose index predates a prune still finds every pack it reads (within G)."""
    keep, drop = image(tmp_path, "k.img", 1), image(tmp_path, "d.img", 2)
    snap_keep, snap_drop = backup(repo, keep), backup(repo, drop)
    checker = fresh(repo)
    _ = checker.index  # loaded before the prune
    forget_snapshot(repo, snap_drop, lambda: time.time() - 2 * GRACE)
    assert prune(repo, later()).packs_unindexed >= 1
    for chunk_id, loc in checker.index.items():  # the stale view reads every pack intact
        checker.decode_chunk(checker.read_pack_range(loc.pack_id, loc.offset, loc.length),
                             chunk_id, loc)  # fmt: skip
    assert check_repository(fresh(repo), read_data=True).ok
    assert snap_keep.id in repo.snapshot_ids()


def test_row_restore_prune(repo: Repository, tmp_path: Path) -> None:
    """A restore that loaded the index before prune unindexed/repacked still restores (< G)."""
    path = image(tmp_path, "a.img", 1)
    other = image(tmp_path, "b.img", 2)
    snap, snap_other = backup(repo, path), backup(repo, other)
    reader = fresh(repo)
    _ = reader.index
    forget_snapshot(repo, snap, lambda: time.time() - 2 * GRACE)
    assert prune(repo, later()).packs_unindexed >= 1
    target = tmp_path / "out.img"
    restore_disk(reader, snap, None, target)  # the forgotten snapshot, from the stale index
    assert target.read_bytes() == path.read_bytes()
    assert restores(repo, snap_other, other.read_bytes(), tmp_path)


# --- one long-lived repository object, several sessions in a row (issue 8, blocker 2) -----------


class _FailingReader(RawImageReader):
    """A raw image whose reads fail from `fail_at` on (a source that breaks mid-disk)."""

    fail_at = 1 << 62

    def read(self, offset: int, length: int) -> bytes:
        if offset >= self.fail_at:
            raise SourceError(f"{self.path}: read error at {offset} (injected)")
        return super().read(offset, length)


@dataclass
class _FilesView:
    readers: list[DiskView]
    consistency: ConsistencyLevel = ConsistencyLevel.CRASH
    warnings: list[str] = field(default_factory=list)
    warning_code: str | None = None
    checkpoint_id: str = ""

    def disks(self) -> list[DiskView]:
        return self.readers

    def commit(self) -> None:
        pass

    def cleanup(self) -> None:
        for view in self.readers:
            view.reader.close()


class _FilesProvider:
    """A stand-in hypervisor whose VMs are raw image files: the VM engine, the sessions and the
    repository under test are the real ones, only the hypervisor is not."""

    name = "files"

    def __init__(self, disks: dict[str, Path], fail_at: dict[str, int]) -> None:
        self.disks, self.fail_at = disks, fail_at

    def list_vms(self) -> list[VmInfo]:
        return [self.get_vm(name) for name in self.disks]

    def get_vm(self, name_or_id: str) -> VmInfo:
        path = self.disks[name_or_id]
        disk = VmDisk("vda", str(path), "raw", path.stat().st_size, False)
        return VmInfo(name_or_id, name_or_id, "running", "pc", (disk,))

    def prepare(
        self, vm: VmInfo, consistency: ConsistencyLevel, tokens: dict[str, str]
    ) -> _FilesView:
        reader = _FailingReader.open(self.disks[vm.name])
        assert isinstance(reader, _FailingReader)
        reader.fail_at = self.fail_at.get(vm.name, reader.fail_at)
        return _FilesView([DiskView(vm.disks[0], reader, None, None, "no change tracking")])


def test_clone_vms_with_a_failed_first_and_a_prune_between(
    repo: Repository, tmp_path: Path
) -> None:
    """The issue's scenario: one job, two clone VMs, the first fails mid-disk (after a full pack
    was uploaded), prune runs (in another process) before the second, the second succeeds: its
    snapshot must restore and check clean, and prune must keep working."""
    data = os.urandom(20 * 1024 * 1024)  # more than one 16 MiB pack
    disks = {name: tmp_path / f"{name}.img" for name in ("vm1", "vm2")}
    for path in disks.values():
        path.write_bytes(data)
    provider = _FilesProvider(disks, {"vm1": 18 * 1024 * 1024})

    def prune_when_vm1_failed(event: VmEvent) -> None:
        if event.message_id == ev.VM_FAILED:
            prune(fresh(repo), later())
            prune(fresh(repo), later(2 * GRACE + 2))

    options = VmBackupOptions(workers=2)
    job = VmBackupJob(repo, provider, options, events=prune_when_vm1_failed)
    first, second = job.run(["vm1", "vm2"]).vm_results
    assert first.status == ev.STATUS_FAILED and second.status == ev.STATUS_SUCCESS
    snapshot = fresh(repo).load_snapshot(second.snapshot_id or "")
    assert restores(repo, snapshot, data, tmp_path)
    assert check_repository(fresh(repo), read_data=True).ok
    prune(repo, later(4 * GRACE))  # does not stop on "not in the index"
    assert restores(repo, snapshot, data, tmp_path)


def test_a_session_does_not_dedup_against_what_prune_removed_before_it_started(
    repo: Repository,
) -> None:
    """The repository object loaded its index (a reader, a parent check) before a prune removed a
    forgotten snapshot's data; a session started afterwards on the same object stores it anew."""
    chunk = os.urandom(CHUNK)
    old = write_snapshot(WriteSession(repo), [chunk], "old")
    forget_snapshot(repo, old, lambda: time.time() - 2 * GRACE)
    assert repo.codec.chunk_id(chunk) in repo.index  # loaded before the prune
    prune(fresh(repo), later())
    assert prune(fresh(repo), later(2 * GRACE + 2)).packs_deleted >= 1
    snap = write_snapshot(WriteSession(repo), [chunk], "new")
    again = fresh(repo)
    assert again.read_chunk(repo.codec.chunk_id(chunk)) == chunk
    assert snap.id in again.snapshot_ids()
    assert check_repository(again, read_data=True).ok
    prune(repo, later(4 * GRACE))


def test_flushed_chunks_of_an_aborted_session_pruned_before_the_next_session(
    repo: Repository,
) -> None:
    """A session flushed an index object, then failed; prune removes its unreferenced data; the
    next session on the same repository object must not dedup against it."""
    chunks = [os.urandom(CHUNK) for _ in range(3)]
    failed = WriteSession(repo)
    for data in chunks:
        failed.store(formats.BLOB_DATA, data, repo.codec.chunk_id(data))
    failed.flush()  # durably indexed: a dedup target from now on
    failed.abort()
    prune(fresh(repo), later())
    assert prune(fresh(repo), later(2 * GRACE + 2)).packs_deleted >= 1
    snap = write_snapshot(WriteSession(repo), chunks, "next")
    again = fresh(repo)
    assert [again.read_chunk(repo.codec.chunk_id(c)) for c in chunks] == chunks
    assert snap.id in again.snapshot_ids()
    assert check_repository(again, read_data=True).ok


def test_unindexed_chunks_of_an_aborted_session_are_never_dedup_targets(
    repo: Repository,
) -> None:
    """Uploaded but not yet indexed when the session failed: the next session stores its own."""
    chunk = os.urandom(CHUNK)
    chunk_id = repo.codec.chunk_id(chunk)
    failed = WriteSession(repo, pack_target_bytes=CHUNK)
    failed.store(formats.BLOB_DATA, chunk, chunk_id)
    while not pack_keys(repo):  # the pack is stored, its index object not written
        time.sleep(0.01)
    failed.abort()
    session = WriteSession(repo)
    assert chunk_id not in repo.index
    assert session.reserve(chunk_id)  # it must store the chunk itself
    session.abort()


def test_a_new_session_sees_index_objects_written_since_the_repository_loaded(
    repo: Repository,
) -> None:
    """Refreshing per session also picks up what other processes indexed meanwhile."""
    _ = repo.index  # loaded while the repository is empty
    chunk = os.urandom(CHUNK)
    write_snapshot(WriteSession(repo), [chunk], "other")
    session = WriteSession(repo)
    assert not session.reserve(repo.codec.chunk_id(chunk))  # deduplicated
    session.abort()
