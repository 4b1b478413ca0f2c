"""Several key files: a damaged one must not lock out the others; old ones open; re-wrapping."""

from __future__ import annotations

import json

import pytest

from e3backup.core.errors import FormatError, WrongPassword
from e3backup.repo import formats
from e3backup.repo.config import DEFAULT_CHUNK_SIZE, RepoConfig
from e3backup.repo.keys import add_key_file, change_password
from e3backup.repo.repository import Repository
from e3backup.storage.backend import Backend
from e3backup.storage.memory import MemoryBackend
from fixtures.legacy_keys import (
    LEGACY_MASTER,
    LEGACY_PASSWORD,
    LEGACY_REPO_ID,
    LEGACY_SCRYPT_KEY_FILE,
)


def _damage_keys(backend: Backend) -> list[str]:
    keys = [info.key for info in backend.list(formats.KEYS_PREFIX)]
    for key in keys:
        backend.put(key, b"{not json")
    return keys


def test_damaged_key_file_beside_a_good_one_still_opens(repo_backend: Backend) -> None:
    backend = repo_backend
    Repository.init(backend, "pw")
    good = next(iter(backend.list(formats.KEYS_PREFIX))).key
    backend.put(formats.KEYS_PREFIX + "0" * 64, b"{not json")  # sorts first
    repo = Repository.open(backend, "pw")
    assert repo.config.encryption == "aes-256-gcm"
    assert backend.stat(good).size_bytes > 0


def test_all_key_files_damaged_is_a_format_error_not_wrong_password(repo_backend: Backend) -> None:
    backend = repo_backend
    Repository.init(backend, "pw")
    _damage_keys(backend)
    with pytest.raises(FormatError, match="every key file is damaged"):
        Repository.open(backend, "pw")


def test_wrong_password_with_a_damaged_key_file_is_still_wrong_password(
    repo_backend: Backend,
) -> None:
    backend = repo_backend
    Repository.init(backend, "pw")
    backend.put(formats.KEYS_PREFIX + "0" * 64, b"{not json")
    with pytest.raises(WrongPassword):
        Repository.open(backend, "other")


def _legacy_repository(backend: Backend) -> None:
    """An encrypted repository as the scrypt-only code left it: its config and one key file."""
    config = RepoConfig(formats.FORMAT_VERSION, LEGACY_REPO_ID, DEFAULT_CHUNK_SIZE, "aes-256-gcm")
    backend.put(formats.KEYS_PREFIX + "1" * 64, LEGACY_SCRYPT_KEY_FILE)
    backend.put(formats.CONFIG_KEY, config.to_json())


def _kdf_names(backend: Backend) -> list[str]:
    return [
        json.loads(backend.get(i.key))["kdf"]["name"] for i in backend.list(formats.KEYS_PREFIX)
    ]


def test_repository_with_a_scrypt_key_file_opens_and_rewraps_to_argon2id() -> None:
    backend = MemoryBackend()
    _legacy_repository(backend)
    assert Repository.open(backend, LEGACY_PASSWORD).codec._keys == LEGACY_MASTER
    change_password(backend, LEGACY_REPO_ID, LEGACY_PASSWORD, "new password")
    assert _kdf_names(backend) == ["argon2id"]
    assert Repository.open(backend, "new password").codec._keys == LEGACY_MASTER
    with pytest.raises(WrongPassword):
        Repository.open(backend, LEGACY_PASSWORD)


def test_change_password_replaces_only_the_key_file_it_opened(repo_backend: Backend) -> None:
    backend = repo_backend
    repo = Repository.init(backend, "pw")
    master = repo.codec._keys
    other = add_key_file(backend, master, "colleague", repo.config.repo_id)
    old = {i.key for i in backend.list(formats.KEYS_PREFIX)} - {other}
    new = change_password(backend, repo.config.repo_id, "pw", "pw2")
    assert {i.key for i in backend.list(formats.KEYS_PREFIX)} == {other, new}
    assert new not in old
    assert Repository.open(backend, "pw2").codec._keys == master
    assert Repository.open(backend, "colleague").codec._keys == master
    with pytest.raises(WrongPassword):
        Repository.open(backend, "pw")


def test_change_password_with_a_wrong_password_changes_nothing(repo_backend: Backend) -> None:
    backend = repo_backend
    repo = Repository.init(backend, "pw")
    before = {i.key: backend.get(i.key) for i in backend.list(formats.KEYS_PREFIX)}
    with pytest.raises(WrongPassword):
        change_password(backend, repo.config.repo_id, "not it", "pw2")
    assert {i.key: backend.get(i.key) for i in backend.list(formats.KEYS_PREFIX)} == before
