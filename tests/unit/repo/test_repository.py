"""Repository lifecycle and snapshot lookup, on the memory, local and S3 backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from e3backup.core.errors import (
    FormatError,
    RepositoryExists,
    RepositoryNotFound,
    SnapshotNotFound,
    UsageError,
    WrongPassword,
)
from e3backup.repo import formats
from e3backup.repo.config import DEFAULT_CHUNK_SIZE, RepoConfig
from e3backup.repo.manifest import Snapshot
from e3backup.repo.repository import Repository
from e3backup.repo.session import WriteSession
from e3backup.storage.backend import Backend
from e3backup.storage.local import LocalBackend
from e3backup.storage.memory import MemoryBackend

PASSWORD = "s3cret password"


@pytest.fixture
def backend(repo_backend: Backend) -> Backend:
    return repo_backend  # memory, local and s3 (tests/conftest.py)


@pytest.mark.parametrize("encryption", ["aes-256-gcm", "none"])
def test_init_open_round_trip(backend: Backend, encryption: str) -> None:
    password = PASSWORD if encryption != "none" else None
    repo = Repository.init(backend, password, encryption, chunk_size=128 * 1024)
    assert repo.codec.encrypted == (encryption != "none")
    data = b"some chunk data" * 1000
    cid = repo.codec.chunk_id(data)
    session = WriteSession(repo)
    session.store(formats.BLOB_DATA, data, cid)
    session.flush()
    session.close()

    again = Repository.open(backend, password)
    assert again.config == repo.config
    assert again.config.chunk_size == 128 * 1024
    assert again.config.encryption == encryption
    assert again.codec.chunk_id(data) == cid  # same id key
    assert again.read_chunk(cid) == data
    assert len(again.index) == 1
    keys = list(backend.list(formats.KEYS_PREFIX))
    assert len(keys) == (1 if encryption != "none" else 0)
    assert list(backend.list(formats.SESSIONS_PREFIX)) == []


def test_config_is_plaintext_without_secrets(backend: Backend) -> None:
    repo = Repository.init(backend, PASSWORD)
    config = RepoConfig.from_json(backend.get(formats.CONFIG_KEY))
    assert config.id_key is None  # the id key of an encrypted repository is only in key files
    assert config.repo_id == repo.config.repo_id
    assert config.chunk_size == DEFAULT_CHUNK_SIZE


def test_init_refuses_existing_repository(backend: Backend) -> None:
    Repository.init(backend, PASSWORD)
    with pytest.raises(RepositoryExists):
        Repository.init(backend, PASSWORD)
    with pytest.raises(RepositoryExists):
        Repository.init(backend, None, "none")


def test_init_refuses_non_empty_location(backend: Backend) -> None:
    backend.put("holiday-photos/img001.jpg", b"\xff\xd8")
    with pytest.raises(RepositoryExists, match="not empty"):
        Repository.init(backend, PASSWORD)
    assert backend.get("holiday-photos/img001.jpg") == b"\xff\xd8"
    with pytest.raises(RepositoryNotFound):
        Repository.open(backend, PASSWORD)


def test_open_empty_location(backend: Backend) -> None:
    with pytest.raises(RepositoryNotFound):
        Repository.open(backend, PASSWORD)


def test_open_missing_local_directory(tmp_path: Path) -> None:
    with pytest.raises(RepositoryNotFound):
        Repository.open(LocalBackend(tmp_path / "does-not-exist"), PASSWORD)


def test_encrypted_repository_needs_a_password(backend: Backend) -> None:
    with pytest.raises(UsageError):
        Repository.init(backend, None)
    with pytest.raises(UsageError):
        Repository.init(backend, "")
    Repository.init(backend, PASSWORD)
    with pytest.raises(UsageError):
        Repository.open(backend, None)
    with pytest.raises(UsageError):
        Repository.open(backend, "")


def test_wrong_password(backend: Backend) -> None:
    Repository.init(backend, PASSWORD)
    with pytest.raises(WrongPassword):
        Repository.open(backend, "not the password")


def test_password_callable(backend: Backend) -> None:
    Repository.init(backend, PASSWORD)
    asked: list[str] = []

    def ask(answer: str) -> str:
        asked.append(answer)
        return answer

    with pytest.raises(WrongPassword):
        Repository.open(backend, lambda: ask("wrong"))
    assert Repository.open(backend, lambda: ask(PASSWORD)).codec.encrypted
    assert asked == ["wrong", PASSWORD]


def test_password_callable_not_asked_for_unencrypted(backend: Backend) -> None:
    Repository.init(backend, None, "none")

    def never() -> str:
        raise AssertionError("the password must not be asked for")

    assert not Repository.open(backend, never).codec.encrypted


def test_any_key_file_opens(backend: Backend) -> None:
    from e3backup.core.ids import new_id
    from e3backup.repo import keys

    repo = Repository.init(backend, PASSWORD)
    master = Repository.open(backend, PASSWORD).codec._keys
    backend.put(
        formats.KEYS_PREFIX + new_id(), keys.wrap(master, "second password", repo.config.repo_id)
    )
    assert Repository.open(backend, "second password").config == repo.config
    assert Repository.open(backend, PASSWORD).config == repo.config
    with pytest.raises(WrongPassword):
        Repository.open(backend, "third")


def test_encrypted_repository_without_key_files(backend: Backend) -> None:
    Repository.init(backend, PASSWORD)
    for info in list(backend.list(formats.KEYS_PREFIX)):
        backend.delete(info.key)
    with pytest.raises(FormatError):
        Repository.open(backend, PASSWORD)


def test_damaged_config(backend: Backend) -> None:
    Repository.init(backend, PASSWORD)
    backend.put(formats.CONFIG_KEY, b"{not json")
    with pytest.raises(FormatError):
        Repository.open(backend, PASSWORD)


@pytest.mark.parametrize(
    "chunk_size",
    [0, -1, 100_000, 3 * 64 * 1024, 32 * 1024, 8 * 1024 * 1024, 64 * 1024 + 1],
)
def test_invalid_chunk_size(chunk_size: int) -> None:
    backend = MemoryBackend()
    with pytest.raises(UsageError, match="power of two"):
        Repository.init(backend, PASSWORD, chunk_size=chunk_size)
    assert list(backend.list("")) == []  # nothing written


@pytest.mark.parametrize("chunk_size", [64 * 1024, 1024 * 1024, 4 * 1024 * 1024])
def test_valid_chunk_size(backend: Backend, chunk_size: int) -> None:
    Repository.init(backend, None, "none", chunk_size=chunk_size)
    assert Repository.open(backend, None).config.chunk_size == chunk_size


def test_unknown_encryption_scheme() -> None:
    with pytest.raises(UsageError):
        Repository.init(MemoryBackend(), PASSWORD, encryption="rot13")


# --- snapshots ---------------------------------------------------------------------------------

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def _commit(repo: Repository, snapshot_id: str, hours: int, source_id: str = "src-a") -> None:
    snapshot = Snapshot(
        id=snapshot_id,
        time=(T0 + timedelta(hours=hours)).isoformat(),
        hostname="host",
        source_type="image",
        source_id=source_id,
        source_name="/images/disk.img",
        backup_type="Full",
        parent=None,
        disks=[],
    )
    WriteSession(repo).commit(snapshot)


@pytest.fixture
def repo_with_snapshots(backend: Backend) -> Repository:
    repo = Repository.init(backend, None, "none")
    _commit(repo, "abcd1111" + "0" * 56, hours=1)
    _commit(repo, "abcd2222" + "0" * 56, hours=3)
    _commit(repo, "ef012345" + "0" * 56, hours=2, source_id="src-b")
    _commit(repo, "99990000" + "0" * 56, hours=0, source_id="src-b")
    return repo


def test_no_snapshots(backend: Backend) -> None:
    repo = Repository.init(backend, None, "none")
    assert repo.list_snapshots() == []
    with pytest.raises(SnapshotNotFound):
        repo.find_snapshot("latest")
    assert repo.latest_for_source("src-a") is None
    with pytest.raises(SnapshotNotFound):
        repo.find_snapshot("abcd")


def test_list_snapshots_oldest_first(repo_with_snapshots: Repository) -> None:
    ids = [s.id[:8] for s in repo_with_snapshots.list_snapshots()]
    assert ids == ["99990000", "abcd1111", "ef012345", "abcd2222"]


def test_find_latest(repo_with_snapshots: Repository) -> None:
    repo = repo_with_snapshots
    assert repo.find_snapshot("latest").id.startswith("abcd2222")
    assert repo.find_snapshot("latest", "src-b").id.startswith("ef012345")
    latest_a = repo.latest_for_source("src-a")
    assert latest_a is not None and latest_a.id.startswith("abcd2222")
    assert repo.latest_for_source("src-unknown") is None
    with pytest.raises(SnapshotNotFound):
        repo.find_snapshot("latest", "src-unknown")


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("abcd1", "abcd1111"),
        ("ABCD2", "abcd2222"),
        ("ef01", "ef012345"),
        ("9999", "99990000"),
        ("abcd1111" + "0" * 56, "abcd1111"),
    ],
)
def test_find_by_prefix(repo_with_snapshots: Repository, ref: str, expected: str) -> None:
    assert repo_with_snapshots.find_snapshot(ref).id.startswith(expected)


def test_ambiguous_prefix(repo_with_snapshots: Repository) -> None:
    with pytest.raises(UsageError, match="ambiguous"):
        repo_with_snapshots.find_snapshot("abcd")


@pytest.mark.parametrize("ref", ["abcf", "abcd3", "ef0123456"])
def test_unknown_snapshot(repo_with_snapshots: Repository, ref: str) -> None:
    with pytest.raises(SnapshotNotFound):
        repo_with_snapshots.find_snapshot(ref)


@pytest.mark.parametrize("ref", ["", "abc", "last", "abcd-1", "xyz12345", "../config", "LATEST"])
def test_not_a_snapshot_reference(repo_with_snapshots: Repository, ref: str) -> None:
    with pytest.raises(UsageError):
        repo_with_snapshots.find_snapshot(ref)


def test_load_snapshot_missing(repo_with_snapshots: Repository) -> None:
    with pytest.raises(SnapshotNotFound):
        repo_with_snapshots.load_snapshot("f" * 64)
