"""The backup and restore engines end to end on a real repository (memory, local and S3)."""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e3backup.core.cancel import CancelToken
from e3backup.core.errors import CancelledError, IntegrityError
from e3backup.engines import image_backup
from e3backup.engines.image_backup import ImageBackupOptions, backup_image, restore_disk
from e3backup.engines.progress import Progress, ProgressTracker
from e3backup.engines.restore import DiskRestore
from e3backup.engines.restore_targets import RestoreTarget, open_target
from e3backup.repo import formats
from e3backup.repo.check import check_repository
from e3backup.repo.manifest import Snapshot
from e3backup.repo.repository import Repository
from e3backup.repo.session import WriteSession
from e3backup.sources.image import RawImageReader
from e3backup.storage.backend import Backend
from e3backup.storage.factory import wrap_backend

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB
SIZE = 8 * MiB
COUNT = SIZE // CHUNK


@pytest.fixture
def repo(repo_backend: Backend) -> Repository:
    return Repository.init(repo_backend, "pw", chunk_size=CHUNK)


def _image_bytes(seed: int = 0) -> bytearray:
    """8 MiB: random, repetitive and zero regions, not aligned to chunk boundaries."""
    data = bytearray(SIZE)
    rnd = os.urandom(3 * MiB)
    data[100 : 100 + len(rnd)] = rnd
    pattern = (b"repetitive %d " % seed) * (2 * MiB // 13)
    data[4 * MiB + 7 : 4 * MiB + 7 + len(pattern)] = pattern
    data[SIZE - 10 :] = b"tail bytes"
    return data


def _write(path: Path, data: bytes | bytearray) -> Path:
    path.write_bytes(bytes(data))
    return path


def _backup(
    repo: Repository, path: Path, options: ImageBackupOptions | None = None, **kw: object
) -> Snapshot:
    with RawImageReader.open(path) as reader:
        return backup_image(repo, path, reader, options, **kw)  # type: ignore[arg-type]


def _restored(repo: Repository, snapshot: Snapshot, tmp_path: Path) -> bytes:
    target = tmp_path / f"restored-{snapshot.id[:8]}.img"
    assert restore_disk(repo, snapshot, None, target) == snapshot.disks[0].size_bytes
    return target.read_bytes()


def test_full_backup_and_restore(repo: Repository, tmp_path: Path) -> None:
    image = _image_bytes()
    path = _write(tmp_path / "disk.img", image)
    snapshot = _backup(repo, path)
    assert snapshot.backup_type == "Full"
    assert snapshot.parent is None
    disk = snapshot.disks[0]
    assert disk.name == "disk.img"
    assert disk.size_bytes == SIZE
    assert disk.read_plan == "full"
    zero_chunks = sum(1 for n in range(COUNT) if not any(image[n * CHUNK : (n + 1) * CHUNK]))
    assert disk.chunks_zero == zero_chunks > 0
    assert _restored(repo, snapshot, tmp_path) == image

    reopened = Repository.open(repo.backend, "pw")
    assert _restored(reopened, reopened.find_snapshot("latest"), tmp_path / "..") == image
    assert check_repository(reopened, read_data=True).ok


def test_restore_keeps_holes_and_refuses_to_overwrite(repo: Repository, tmp_path: Path) -> None:
    image = _image_bytes()
    snapshot = _backup(repo, _write(tmp_path / "disk.img", image))
    target = tmp_path / "out.img"
    restore_disk(repo, snapshot, "disk.img", target)
    from e3backup.core.errors import UsageError

    with pytest.raises(UsageError):
        restore_disk(repo, snapshot, None, target)
    restore_disk(repo, snapshot, None, target, overwrite=True)
    assert target.read_bytes() == image


def test_second_full_backup_uploads_nothing_new(repo: Repository, tmp_path: Path) -> None:
    path = _write(tmp_path / "disk.img", _image_bytes())
    first = _backup(repo, path)
    second = _backup(repo, path)
    assert second.parent == first.id
    assert second.backup_type == "Full"
    assert second.disks[0].bytes_uploaded == 0
    assert second.disks[0].bytes_changed == 0
    assert second.disks[0].pages == first.disks[0].pages  # pages dedupe too


def _changed_image(image: bytearray, chunks: list[int]) -> bytearray:
    new = bytearray(image)
    for n in chunks:
        new[n * CHUNK + 5 : n * CHUNK + 5 + 1000] = os.urandom(1000)
    return new


@pytest.mark.parametrize(
    "changed",
    [[0], [COUNT - 1], [3, 4, 5], [0, 60, 61, 100, COUNT - 1], list(range(0, COUNT, 7))],
    ids=["first", "last", "run", "scattered", "every-7th"],
)
def test_incremental_reads_only_changed_chunks(
    repo: Repository, tmp_path: Path, changed: list[int]
) -> None:
    image = _image_bytes()
    path = _write(tmp_path / "disk.img", image)
    parent = _backup(repo, path)
    new = _changed_image(image, changed)
    _write(path, new)
    extents = [(n * CHUNK + 5, 1000) for n in changed]
    snapshot = _backup(repo, path, ImageBackupOptions(changed_extents=extents))
    disk = snapshot.disks[0]
    assert snapshot.backup_type == "Incremental"
    assert snapshot.parent == parent.id
    assert disk.read_plan == "incremental"
    assert disk.read_plan_reason == ""
    assert disk.bytes_read == len(changed) * CHUNK
    assert disk.bytes_changed == len(changed) * CHUNK
    assert _restored(repo, snapshot, tmp_path) == new
    assert _restored(repo, parent, tmp_path) == image  # the parent is untouched
    assert check_repository(repo, read_data=True).ok


def test_incremental_with_no_changes(repo: Repository, tmp_path: Path) -> None:
    image = _image_bytes()
    path = _write(tmp_path / "disk.img", image)
    parent = _backup(repo, path)
    snapshot = _backup(repo, path, ImageBackupOptions(changed_extents=[]))
    assert snapshot.backup_type == "Incremental"
    assert snapshot.disks[0].bytes_read == 0
    assert snapshot.disks[0].pages == parent.disks[0].pages
    assert _restored(repo, snapshot, tmp_path) == image


def test_incremental_chunk_becoming_zero(repo: Repository, tmp_path: Path) -> None:
    image = _image_bytes()
    path = _write(tmp_path / "disk.img", image)
    _backup(repo, path)
    new = bytearray(image)
    new[CHUNK : 2 * CHUNK] = bytes(CHUNK)
    _write(path, new)
    snapshot = _backup(repo, path, ImageBackupOptions(changed_extents=[(CHUNK, CHUNK)]))
    assert snapshot.disks[0].bytes_read == CHUNK
    assert _restored(repo, snapshot, tmp_path) == new


def test_changed_extents_without_parent_is_a_full_read(repo: Repository, tmp_path: Path) -> None:
    image = _image_bytes()
    path = _write(tmp_path / "disk.img", image)
    snapshot = _backup(repo, path, ImageBackupOptions(changed_extents=[(0, CHUNK)]))
    disk = snapshot.disks[0]
    assert snapshot.backup_type == "Full"
    assert disk.read_plan == "full"
    assert "no parent" in disk.read_plan_reason
    assert _restored(repo, snapshot, tmp_path) == image


def test_size_change_is_a_full_read(repo: Repository, tmp_path: Path) -> None:
    image = _image_bytes()
    path = _write(tmp_path / "disk.img", image)
    parent = _backup(repo, path)
    grown = image + os.urandom(CHUNK + 123)
    _write(path, grown)
    snapshot = _backup(repo, path, ImageBackupOptions(changed_extents=[(0, 10)]))
    disk = snapshot.disks[0]
    assert snapshot.backup_type == "Full"
    assert snapshot.parent == parent.id
    assert disk.read_plan == "full"
    assert "size changed" in disk.read_plan_reason
    assert disk.size_bytes == len(grown)
    assert _restored(repo, snapshot, tmp_path) == grown
    assert disk.bytes_changed == len(grown) - SIZE  # only the new tail is new
    shrunk = image[: SIZE - 3 * CHUNK - 1]
    _write(path, shrunk)
    again = _backup(repo, path, ImageBackupOptions(changed_extents=[(0, 10)]))
    assert again.backup_type == "Full"
    assert _restored(repo, again, tmp_path) == shrunk


def test_progress_is_monotonic_and_complete(repo: Repository, tmp_path: Path) -> None:
    path = _write(tmp_path / "disk.img", _image_bytes())
    seen: list[Progress] = []
    lock = threading.Lock()

    def record(p: Progress) -> None:
        with lock:
            seen.append(p)

    _backup(repo, path, progress=record)
    assert seen
    processed = [p.bytes_processed for p in seen]
    assert processed == sorted(processed)
    assert all(p.bytes_total == SIZE for p in seen)
    assert seen[-1].bytes_processed == SIZE
    assert seen[-1].progress_pct == 100.0


def _assert_consistent_after_cancel(
    repo: Repository, previous: Snapshot, image: bytes | bytearray, tmp_path: Path
) -> None:
    reopened = Repository.open(repo.backend, "pw")
    assert [s.id for s in reopened.list_snapshots()] == [previous.id]
    report = check_repository(reopened, read_data=True)
    assert report.ok, report.errors
    assert list(reopened.backend.list(formats.SESSIONS_PREFIX)) == []
    assert _restored(reopened, reopened.find_snapshot("latest"), tmp_path) == image


def test_cancel_from_progress_callback(repo: Repository, tmp_path: Path) -> None:
    image = _image_bytes()
    path = _write(tmp_path / "disk.img", image)
    previous = _backup(repo, path)
    _write(path, _image_bytes(seed=1) + b"")
    token = CancelToken()
    calls: list[int] = []

    def cancel_after_some_progress(p: Progress) -> None:
        calls.append(p.bytes_processed)
        if p.bytes_processed > 0:
            token.cancel("stop requested by the test")

    with pytest.raises(CancelledError):
        _backup(repo, path, progress=cancel_after_some_progress, cancel=token)
    assert calls and calls[0] < SIZE
    _assert_consistent_after_cancel(repo, previous, image, tmp_path)


class _CancellingReader:
    """A real image reader that cancels the backup while it reads one given chunk, after the
    engine has had time to submit every remaining chunk (cancel racing the end of the disk)."""

    def __init__(self, reader: RawImageReader, token: CancelToken, at_offset: int) -> None:
        self._reader = reader
        self._token = token
        self._at_offset = at_offset

    @property
    def size_bytes(self) -> int:
        return self._reader.size_bytes

    def allocated_extents(self) -> Iterator[tuple[int, int]]:
        return self._reader.allocated_extents()

    def read(self, offset: int, length: int) -> bytes:
        if offset == self._at_offset:
            time.sleep(0.3)
            self._token.cancel("cancelled near the end")
        return self._reader.read(offset, length)

    def close(self) -> None:
        self._reader.close()


def test_cancel_near_the_end_never_commits_a_snapshot(repo: Repository, tmp_path: Path) -> None:
    image = _image_bytes()
    path = _write(tmp_path / "disk.img", image)
    previous = _backup(repo, path)
    _write(path, _image_bytes(seed=2))
    token = CancelToken()
    with RawImageReader.open(path) as raw:
        reader = _CancellingReader(raw, token, at_offset=(COUNT - 4) * CHUNK)
        with pytest.raises(CancelledError):
            backup_image(repo, path, reader, ImageBackupOptions(workers=1), cancel=token)
    _assert_consistent_after_cancel(repo, previous, image, tmp_path)


def test_cancelled_restore_leaves_no_target(repo: Repository, tmp_path: Path) -> None:
    image = bytearray(os.urandom(SIZE))  # incompressible: several ranged reads
    snapshot = _backup(repo, _write(tmp_path / "disk.img", image))
    token = CancelToken()

    def cancel(p: Progress) -> None:
        if p.bytes_processed > 0 and not token.cancelled:
            token.cancel()
            time.sleep(0.3)  # let the engine submit every remaining run: cancel races the end

    target = tmp_path / "restored.img"
    with pytest.raises(CancelledError):
        restore_disk(repo, snapshot, None, target, progress=cancel, cancel=token)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["disk.img"]


def test_truncated_pack_is_an_integrity_error_naming_the_pack(
    repo: Repository, tmp_path: Path
) -> None:
    """A pack shorter than the index says is damage (exit 13), on every backend, not a storage
    failure (exit 20)."""
    snapshot = _backup(repo, _write(tmp_path / "disk.img", bytearray(os.urandom(SIZE))))
    [pack] = [info for info in repo.backend.list(formats.PACKS_PREFIX)]
    repo.backend.put(pack.key, repo.backend.get(pack.key, 0, pack.size_bytes // 2))
    target = tmp_path / "restored.img"
    with pytest.raises(IntegrityError, match="truncated") as excinfo:
        restore_disk(repo, snapshot, None, target)
    assert pack.key.rsplit("/", 1)[1][:16] in str(excinfo.value)
    assert not target.exists()


def test_cancel_while_uploading_stops_the_throttled_uploads(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancel after the whole disk was read, while every pack still waits for the bandwidth
    limit: the backup stops without sitting out the uploads and writes no snapshot."""
    image = _image_bytes()
    path = _write(tmp_path / "disk.img", image)
    previous = _backup(repo, path)
    _write(path, bytearray(os.urandom(SIZE)))  # all new: ~8 MiB to upload
    limit_kibps = 256  # 32 s for the new data; four 2 MiB packs, all in flight at once
    throttled = Repository.open(wrap_backend(repo.backend, upload_limit_kibps=limit_kibps), "pw")
    monkeypatch.setattr(
        image_backup, "WriteSession", functools.partial(WriteSession, pack_target_bytes=2 * MiB)
    )
    token = CancelToken()
    phases: list[str] = []

    def cancel_when_uploading(p: Progress) -> None:
        phases.append(p.current_item)
        if p.current_item.endswith(": uploading"):
            token.cancel("cancelled while uploading")

    packs_before = {info.key for info in repo.backend.list(formats.PACKS_PREFIX)}
    with pytest.raises(CancelledError, match="while uploading"):
        _backup(throttled, path, progress=cancel_when_uploading, cancel=token)
    assert phases[-1] == f"{path}: uploading"
    stored = [i for i in repo.backend.list(formats.PACKS_PREFIX) if i.key not in packs_before]
    assert sum(i.size_bytes for i in stored) < SIZE // 2  # the cancel came before the uploads
    _assert_consistent_after_cancel(repo, previous, image, tmp_path)


class _CancelOnFirstWrite:
    """A real restore target that cancels the restore at its first write and counts the
    writes that still arrive afterwards."""

    def __init__(self, inner: RestoreTarget, token: CancelToken) -> None:
        self._inner = inner
        self._token = token
        self.writes_after_cancel = 0
        self.writes_zeros = inner.writes_zeros
        self._lock = threading.Lock()

    def write(self, offset: int, data: bytes) -> None:
        with self._lock:
            if self._token.cancelled:
                self.writes_after_cancel += 1
            self._token.cancel("cancelled at the first write")
        self._inner.write(offset, data)

    def commit(self) -> None:
        self._inner.commit()

    def abort(self) -> None:
        self._inner.abort()


def test_cancel_wakes_fetches_waiting_for_the_download_limit(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fetched runs wait for the download cap before they are written: after a cancel none of
    them may still be written (before the fix each sat out its wait, then wrote)."""
    monkeypatch.setattr(
        image_backup, "WriteSession", functools.partial(WriteSession, pack_target_bytes=CHUNK * 4)
    )
    snapshot = _backup(repo, _write(tmp_path / "disk.img", bytearray(os.urandom(SIZE))))
    throttled = Repository.open(wrap_backend(repo.backend, download_limit_kibps=2560), "pw")
    token = CancelToken()
    target = _CancelOnFirstWrite(open_target(tmp_path / "restored.img", SIZE), token)
    tracker = ProgressTracker(SIZE)
    with token.bound(), pytest.raises(CancelledError, match="first write"):
        DiskRestore(throttled, tracker, token).run(snapshot.disks[0], target)
    assert target.writes_after_cancel == 0
    assert not (tmp_path / "restored.img").exists()
