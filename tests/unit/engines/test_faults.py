"""Storage faults under the real repository and engines: the backend stack is assembled by
`storage.factory.wrap_backend` (retry on top) around a `FaultyBackend` over memory storage.

Transient errors are retried and the backup succeeds; a persistent error fails the backup with a
clear message and leaves a consistent repository; flipped bits are integrity errors; a truncated
write never yields a snapshot that restores wrong data.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest

from e3backup.core.errors import E3Error, IntegrityError, StorageError
from e3backup.engines import image_backup
from e3backup.engines.image_backup import backup_image, restore_disk
from e3backup.repo.check import check_repository
from e3backup.repo.manifest import Snapshot
from e3backup.repo.repository import Repository
from e3backup.repo.session import WriteSession
from e3backup.sources.image import RawImageReader
from e3backup.storage.backend import Backend
from e3backup.storage.factory import wrap_backend
from e3backup.storage.faulty import FaultyBackend
from e3backup.storage.memory import MemoryBackend
from e3backup.storage.retry import RetryPolicy

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB
SIZE = 4 * MiB
PACK_BYTES = 256 * KiB  # small packs: a 4 MiB image makes a dozen of them
FAST_RETRY = RetryPolicy(max_attempts=5, base_delay_s=0.001, max_delay_s=0.01)


def _stack(inner: Backend, **faults: Any) -> tuple[FaultyBackend, Backend]:
    faulty = FaultyBackend(inner, **faults)
    return faulty, wrap_backend(faulty, retry=FAST_RETRY)


def _image(tmp_path: Path, name: str = "disk.img") -> tuple[Path, bytes]:
    data = os.urandom(SIZE // 2) + bytes(SIZE // 4) + os.urandom(SIZE // 4)
    path = tmp_path / name
    path.write_bytes(data)
    return path, data


@pytest.fixture(autouse=True)
def _small_packs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many small packs, so faults can hit the middle of a backup."""
    monkeypatch.setattr(
        image_backup, "WriteSession", functools.partial(WriteSession, pack_target_bytes=PACK_BYTES)
    )


def _backup(repo: Repository, path: Path) -> Snapshot:
    with RawImageReader.open(path) as reader:
        return backup_image(repo, path, reader)


def _restored(repo: Repository, snapshot: Snapshot, target: Path) -> bytes:
    target.unlink(missing_ok=True)
    restore_disk(repo, snapshot, None, target)
    return target.read_bytes()


@pytest.fixture
def store() -> MemoryBackend:
    return MemoryBackend()


def test_transient_errors_are_retried_and_the_backup_succeeds(
    store: MemoryBackend, tmp_path: Path
) -> None:
    Repository.init(store, "pw", chunk_size=CHUNK)
    faulty, backend = _stack(
        store, transient_failures={"put": 3, "get": 2, "list": 1, "stat": 1}, keys=""
    )
    repo = Repository.open(backend, "pw")
    path, data = _image(tmp_path)
    snapshot = _backup(repo, path)
    assert faulty.injected["transient"] >= 5
    assert _restored(repo, snapshot, tmp_path / "out.img") == data
    assert check_repository(Repository.open(store, "pw"), read_data=True).ok


@pytest.mark.parametrize("failing_put", [1, 3, 6])
def test_a_persistent_error_fails_the_backup_and_the_repository_stays_consistent(
    store: MemoryBackend, tmp_path: Path, failing_put: int
) -> None:
    Repository.init(store, "pw", chunk_size=CHUNK)
    path, data = _image(tmp_path)
    earlier = _backup(Repository.open(store, "pw"), path)

    changed = os.urandom(SIZE)
    path.write_bytes(changed)
    faulty, backend = _stack(store, fail_calls={"put": {failing_put}}, keys="packs/")
    with pytest.raises(StorageError, match="injected failure"):
        _backup(Repository.open(backend, "pw"), path)
    assert faulty.injected["fail"] == 1

    clean = Repository.open(store, "pw")
    assert [s.id for s in clean.list_snapshots()] == [earlier.id]
    report = check_repository(clean, read_data=True)
    assert report.ok, report.errors
    assert _restored(clean, earlier, tmp_path / "out.img") == data
    retried = _backup(clean, path)  # the next run completes and reuses what was uploaded
    assert _restored(clean, retried, tmp_path / "out2.img") == changed


def test_an_outage_midway_fails_the_backup_cleanly(store: MemoryBackend, tmp_path: Path) -> None:
    Repository.init(store, "pw", chunk_size=CHUNK)
    faulty, backend = _stack(store, fail_after=12)
    assert faulty.fail_after == 12
    path, _ = _image(tmp_path)
    with pytest.raises(StorageError, match="injected outage"):
        _backup(Repository.open(backend, "pw"), path)
    clean = Repository.open(store, "pw")
    assert clean.snapshot_ids() == []
    assert check_repository(clean).ok


def test_bit_flips_on_read_are_integrity_errors(store: MemoryBackend, tmp_path: Path) -> None:
    Repository.init(store, "pw", chunk_size=CHUNK)
    path, _ = _image(tmp_path)
    snapshot = _backup(Repository.open(store, "pw"), path)
    faulty, backend = _stack(store, flip_bits=1.0, keys="packs/", seed=7)
    repo = Repository.open(backend, "pw")
    target = tmp_path / "out.img"
    with pytest.raises(IntegrityError):
        restore_disk(repo, snapshot, None, target)
    assert not target.exists()  # nothing half-restored under the real name
    report = check_repository(repo, read_data=True)
    assert not report.ok
    assert report.damaged_snapshots == {snapshot.id}
    assert faulty.injected["flip"] > 0
    assert check_repository(Repository.open(store, "pw"), read_data=True).ok  # storage is fine


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("probability", [0.3, 0.03])
def test_truncated_writes_never_restore_wrong_data(
    store: MemoryBackend, tmp_path: Path, seed: int, probability: float
) -> None:
    """A store that silently keeps a prefix: the snapshot may exist, but a restore refuses
    (and check names it) rather than returning wrong bytes."""
    Repository.init(store, "pw", chunk_size=CHUNK)
    faulty, backend = _stack(store, truncate_puts=probability, keys="packs/", seed=seed)
    repo = Repository.open(backend, "pw")
    path, data = _image(tmp_path)
    try:
        snapshot: Snapshot | None = _backup(repo, path)
    except E3Error:
        snapshot = None
    clean = Repository.open(store, "pw")
    report = check_repository(clean)
    if snapshot is None:
        return
    try:
        restored = _restored(clean, snapshot, tmp_path / "out.img")
    except E3Error:
        assert faulty.injected["truncate"] > 0
        assert snapshot.id in report.damaged_snapshots  # check names what a restore would hit
        return
    assert restored == data
