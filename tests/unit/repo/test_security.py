"""Acceptance criteria of the encryption issue, checked on real stored objects.

"With encryption on, no 64-byte piece of the image's non-zero data appears in any stored
object"; "the same content gets different chunk ids in two repositories"; the manifests do
not reveal what was backed up; and a local repository is readable by its owner only.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from e3backup.engines.image_backup import backup_image
from e3backup.repo import formats
from e3backup.repo.repository import Repository
from e3backup.sources.image import RawImageReader
from e3backup.storage.backend import Backend
from e3backup.storage.local import LocalBackend

MiB = 1024 * 1024
WINDOW = 32  # every 64-byte piece of the image contains one whole 32-aligned 32-byte window
SECRET_NAME = "payroll-db-server-7f3a.img"


def _image(path: Path) -> bytes:
    """~8 MiB: random data, highly repetitive text, a repeated random block, and holes."""
    data = bytearray(8 * MiB)
    data[0 : 2 * MiB] = os.urandom(2 * MiB)
    text = b"INSERT INTO salaries VALUES ('alice', 123456);\n"
    data[3 * MiB + 17 : 5 * MiB] = (text * (2 * MiB // len(text) + 1))[: 2 * MiB - 17]
    block = os.urandom(4096)
    data[6 * MiB : 7 * MiB] = block * 256  # repetitive but not text-like
    data[8 * MiB - 1000 :] = os.urandom(1000)
    path.write_bytes(bytes(data))
    return bytes(data)


def _windows(image: bytes) -> set[bytes]:
    """Every 32-aligned 32-byte window that is not all zeros."""
    zero = bytes(WINDOW)
    return {
        w for i in range(0, len(image) - WINDOW + 1, WINDOW) if (w := image[i : i + WINDOW]) != zero
    }


def _leaked_windows(obj: bytes, windows: set[bytes]) -> int:
    """How many offsets of `obj` start one of `windows` (8-byte prefix filter, then exact)."""
    if len(obj) < WINDOW:
        return 0
    prefixes = np.unique(np.frombuffer(b"".join(w[:8] for w in windows), dtype="<u8"))
    hits = 0
    for align in range(8):
        usable = (len(obj) - align) // 8 * 8
        keys = np.frombuffer(obj, dtype="<u8", count=usable // 8, offset=align)
        for k in np.flatnonzero(np.isin(keys, prefixes)):
            start = align + 8 * int(k)
            if obj[start : start + WINDOW] in windows:
                hits += 1
    return hits


MakeBackend = Callable[[], Backend]


def _stored_objects(backend: Backend) -> dict[str, bytes]:
    return {info.key: backend.get(info.key) for info in backend.list("")}


def _backup(make_backend: MakeBackend, image_path: Path, encryption: str) -> Repository:
    """A backup of `image_path` into a fresh repository on a fresh backend."""
    password = "pw" if encryption != "none" else None
    repo = Repository.init(make_backend(), password, encryption, chunk_size=64 * 1024)
    with RawImageReader.open(image_path) as reader:
        backup_image(repo, image_path, reader)
    return repo


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    path = tmp_path_factory.mktemp("source") / SECRET_NAME
    return path, _image(path)


def test_detector_finds_plaintext(
    image: tuple[Path, bytes], make_repo_backend: MakeBackend
) -> None:
    """The leak check itself works: an unencrypted repository stores random data as is."""
    path, data = image
    repo = _backup(make_repo_backend, path, "none")
    windows = _windows(data)
    objects = _stored_objects(repo.backend)
    assert sum(_leaked_windows(obj, windows) for obj in objects.values()) > 1000
    assert _leaked_windows(b"xx" + data[12345 : 12345 + 64] + b"yy", windows) >= 1


def test_no_64_byte_piece_of_the_image_is_stored(
    image: tuple[Path, bytes], make_repo_backend: MakeBackend
) -> None:
    path, data = image
    repo = _backup(make_repo_backend, path, "aes-256-gcm")
    windows = _windows(data)
    assert len(windows) > 60_000
    objects = _stored_objects(repo.backend)
    assert any(key.startswith(formats.PACKS_PREFIX) for key in objects)
    assert sum(len(obj) for obj in objects.values()) > 2 * MiB  # the random data is in there
    leaks = {key: n for key, obj in objects.items() if (n := _leaked_windows(obj, windows))}
    assert leaks == {}


def test_manifest_does_not_reveal_the_source(
    image: tuple[Path, bytes], make_repo_backend: MakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E3BACKUP_HOSTNAME", "hr-fileserver-01.corp.example")
    path, _data = image
    repo = _backup(make_repo_backend, path, "aes-256-gcm")
    snapshot = repo.find_snapshot("latest")
    assert snapshot.source_name == str(path.resolve())  # it is recorded, but encrypted
    assert snapshot.hostname == "hr-fileserver-01.corp.example"
    secrets = [SECRET_NAME, str(path.resolve()), snapshot.hostname, snapshot.source_id]
    secrets += ["source_name", snapshot.disks[0].name]
    for key, obj in _stored_objects(repo.backend).items():
        for secret in secrets:
            assert secret.encode() not in obj, (key, secret)


def test_same_content_gets_different_ids_per_repository(
    image: tuple[Path, bytes], make_repo_backend: MakeBackend
) -> None:
    path, _data = image
    first = _backup(make_repo_backend, path, "aes-256-gcm")
    second = _backup(make_repo_backend, path, "aes-256-gcm")

    def ids(repo: Repository) -> set[bytes]:
        disk = repo.find_snapshot("latest").disks[0]
        found = set(repo.disk_chunk_ids(disk)) - {formats.ZERO_ID}
        found |= {bytes.fromhex(p) for p in disk.pages}
        return found

    first_ids, second_ids = ids(first), ids(second)
    assert len(first_ids) > 50 and len(first_ids) == len(second_ids)
    assert first_ids.isdisjoint(second_ids)
    first_keys = {k for k in _stored_objects(first.backend) if k != formats.CONFIG_KEY}
    second_keys = {k for k in _stored_objects(second.backend) if k != formats.CONFIG_KEY}
    assert first_keys.isdisjoint(second_keys)  # packs and index objects too


def test_unencrypted_repositories_also_key_their_ids(
    image: tuple[Path, bytes], make_repo_backend: MakeBackend
) -> None:
    path, _data = image
    first = _backup(make_repo_backend, path, "none")
    second = _backup(make_repo_backend, path, "none")
    a = set(first.disk_chunk_ids(first.find_snapshot("latest").disks[0])) - {formats.ZERO_ID}
    b = set(second.disk_chunk_ids(second.find_snapshot("latest").disks[0])) - {formats.ZERO_ID}
    assert a and a.isdisjoint(b)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("permissive_umask")
def test_local_repository_is_private_whatever_the_umask(tmp_path: Path) -> None:
    """Tests run as root, which reads anything: the modes are what is checked, not access."""
    image = tmp_path / "disk.img"
    _image(image)
    tmp_mode = stat.S_IMODE(tmp_path.stat().st_mode)
    root = tmp_path / "new" / "repo"  # `new` is made by the backend too
    repo = Repository.init(LocalBackend(root), "pw")
    with RawImageReader.open(image) as reader:
        backup_image(repo, image, reader)
    made = [root.parent, root, *root.rglob("*")]
    assert {p.relative_to(root).parts[0] for p in made[2:]} >= {"config", "keys", "packs", "index"}
    modes = {str(p): stat.S_IMODE(p.stat().st_mode) for p in made}
    expected = {str(p): 0o700 if p.is_dir() else 0o600 for p in made}
    assert modes == expected
    assert stat.S_IMODE(tmp_path.stat().st_mode) == tmp_mode  # what existed is left alone
