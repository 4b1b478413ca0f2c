"""The real repository on a real S3 server (SeaweedFS, tests/fixtures/seaweed.py).

Backups and restores through the library with the production backend stack (`wrap_backend`
around `S3Backend`), faults injected between the two, and the CLI's `check` with a data subset.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from cli_harness import Cli

from e3backup.core.errors import IntegrityError
from e3backup.engines.image_backup import ImageBackupOptions, backup_image, restore_disk
from e3backup.repo import formats, verification
from e3backup.repo.check import DataSubset, check_repository
from e3backup.repo.manifest import Snapshot
from e3backup.repo.repository import Repository
from e3backup.sources.image import RawImageReader
from e3backup.storage.backend import Backend
from e3backup.storage.factory import wrap_backend
from e3backup.storage.faulty import FaultyBackend
from e3backup.storage.retry import RetryPolicy
from e3backup.storage.s3 import S3Backend
from fixtures.seaweed import SeaweedServer

MiB = 1024 * 1024
CHUNK = 128 * 1024
BUCKET = "e3-repo-tests"
FAST_RETRY = RetryPolicy(max_attempts=5, base_delay_s=0.01, max_delay_s=0.05)
_prefixes = itertools.count()


@pytest.fixture
def s3_location(seaweed_server: SeaweedServer) -> tuple[S3Backend, str]:
    prefix = f"repo{os.getpid()}-{next(_prefixes)}"
    backend = S3Backend(
        BUCKET,
        prefix,
        endpoint_url=seaweed_server.endpoint,
        region="us-east-1",
        access_key=seaweed_server.access_key,
        secret_key=seaweed_server.secret_key,
    )
    backend.ensure_bucket()
    return backend, f"s3://{BUCKET}/{prefix}"


def _image(path: Path, size: int, seed: int) -> bytes:
    """Random halves and zero quarters: compressible, sparse, several packs' worth."""
    rnd = os.urandom(size // 2)
    data = rnd[: size // 4] + bytes(size // 4) + rnd[size // 4 :] + bytes(size // 4)
    data = data[:size]
    path.write_bytes(data)
    return data


def _backup(repo: Repository, path: Path, extents: list[tuple[int, int]] | None = None) -> Snapshot:
    with RawImageReader.open(path) as reader:
        return backup_image(repo, path, reader, ImageBackupOptions(changed_extents=extents))


def _restore(repo: Repository, snapshot: Snapshot, target: Path) -> bytes:
    target.unlink(missing_ok=True)
    restore_disk(repo, snapshot, None, target)
    return target.read_bytes()


def test_backup_restore_and_subset_check_on_s3(
    s3_location: tuple[S3Backend, str], tmp_path: Path
) -> None:
    raw, _ = s3_location
    repo = Repository.init(wrap_backend(raw), "pw", chunk_size=CHUNK)
    path = tmp_path / "disk.img"
    first_data = _image(path, 48 * MiB, 1)
    first = _backup(repo, path)
    second_data = bytearray(first_data)
    second_data[5 * MiB : 6 * MiB] = os.urandom(MiB)
    path.write_bytes(second_data)
    second = _backup(repo, path, [(5 * MiB, MiB)])
    assert second.disks[0].read_plan == "incremental"

    reopened = Repository.open(wrap_backend(raw), "pw")
    assert _restore(reopened, first, tmp_path / "a.img") == first_data
    assert _restore(reopened, second, tmp_path / "b.img") == second_data
    full = check_repository(reopened, read_data=True)
    assert full.ok, full.errors
    assert full.packs_checked >= 2
    parts = [check_repository(reopened, subset=DataSubset(part=(n, 2))) for n in (1, 2)]
    assert all(p.ok for p in parts)
    assert sum(p.packs_read for p in parts) == full.packs_checked


def test_transient_s3_errors_are_retried(
    s3_location: tuple[S3Backend, str], tmp_path: Path
) -> None:
    raw, _ = s3_location
    Repository.init(raw, "pw", chunk_size=CHUNK)
    faulty = FaultyBackend(raw, transient_failures={"put": 3, "get": 3, "list": 1})
    repo = Repository.open(wrap_backend(faulty, retry=FAST_RETRY), "pw")
    path = tmp_path / "disk.img"
    data = _image(path, 24 * MiB, 2)
    snapshot = _backup(repo, path)
    assert faulty.injected["transient"] == 7
    assert _restore(repo, snapshot, tmp_path / "out.img") == data


def test_bit_flips_from_s3_are_integrity_errors(
    s3_location: tuple[S3Backend, str], tmp_path: Path
) -> None:
    raw, _ = s3_location
    repo = Repository.init(wrap_backend(raw), "pw", chunk_size=CHUNK)
    path = tmp_path / "disk.img"
    _image(path, 8 * MiB, 3)
    snapshot = _backup(repo, path)
    flipping: Backend = FaultyBackend(raw, flip_bits=1.0, keys=formats.PACKS_PREFIX)
    damaged_view = Repository.open(wrap_backend(flipping), "pw")
    with pytest.raises(IntegrityError):
        _restore(damaged_view, snapshot, tmp_path / "out.img")


def test_cli_check_subset_records_verdicts_and_backup_skips_damage(
    s3_location: tuple[S3Backend, str], seaweed_server: SeaweedServer, tmp_path: Path
) -> None:
    raw, location = s3_location
    repo = Repository.init(wrap_backend(raw), "pw", chunk_size=CHUNK)
    path = tmp_path / "disk.img"
    data = bytearray(_image(path, 8 * MiB, 4))
    first = _backup(repo, path)
    before = {info.key for info in raw.list(formats.PACKS_PREFIX)}
    data[MiB : MiB + 100] = os.urandom(100)
    path.write_bytes(data)
    second = _backup(repo, path, [(MiB, 100)])
    (new_pack,) = {info.key for info in raw.list(formats.PACKS_PREFIX)} - before
    blob = bytearray(raw.get(new_pack))
    blob[50] ^= 1
    raw.put(new_pack, bytes(blob))

    cli = Cli(tmp_path / "unused", password="pw")
    env = {
        "E3BACKUP_REPO": location,
        "AWS_ENDPOINT_URL": seaweed_server.endpoint,
        "AWS_ACCESS_KEY_ID": seaweed_server.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweed_server.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    result = cli.run("repo", "check", "--read-data-subset", "100%", "--json", **env)
    assert result.returncode == 13, result.describe()  # IntegrityError
    doc = result.json()
    assert doc["scope"] == "read-data 100%"
    assert doc["damaged_snapshots"] == [second.id]
    assert doc["records_written"] == 2
    assert verification.is_damaged(repo, second.id)

    data[3 * MiB : 3 * MiB + 100] = os.urandom(100)
    data[MiB : MiB + 100] = os.urandom(100)
    path.write_bytes(data)
    third = _backup(repo, path, [(MiB, 100), (3 * MiB, 100)])
    assert third.parent == first.id
    assert "parent failed verification" in third.disks[0].read_plan_reason
    assert _restore(repo, third, tmp_path / "out.img") == data
