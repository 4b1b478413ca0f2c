"""Several key files: a damaged one must not lock out the others."""

from __future__ import annotations

import pytest

from e3backup.core.errors import FormatError, WrongPassword
from e3backup.repo import formats
from e3backup.repo.repository import Repository
from e3backup.storage.backend import Backend


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
