"""Rules only a filesystem backend can break: other processes, crashed writers, OS errors."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from e3backup.core.errors import StorageError
from e3backup.storage.local import TEMP_PREFIX, LocalBackend

PROCESSES = 4
ROUNDS = 15
SHARED_KEY = "config"


def process_payload(writer: int, round_: int) -> bytes:
    """Distinct content and size per write, so a torn or short object cannot pass as whole."""
    header = f"writer {writer} round {round_}\n".encode()
    return header + bytes([writer]) * (64 * 1024 * (1 + writer) + round_ * 4099)


def write_many(root: str, writer: int, start: multiprocessing.synchronize.Event) -> None:
    backend = LocalBackend(Path(root))
    start.wait()
    for round_ in range(ROUNDS):
        backend.put(SHARED_KEY, process_payload(writer, round_))
        backend.put(f"packs/{writer:02x}/{round_:04d}", process_payload(writer, round_))


def write_until_killed(root: str, ready: multiprocessing.synchronize.Event) -> None:
    backend = LocalBackend(Path(root))
    index = 0
    while True:
        backend.put(f"data/{index:06d}", big_payload(index))
        ready.set()
        index += 1


def big_payload(index: int) -> bytes:
    return index.to_bytes(8, "big") * (4 * 1024 * 1024 // 8)


def test_processes_writing_same_and_distinct_keys(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    workers = [
        ctx.Process(target=write_many, args=(str(tmp_path), w, start)) for w in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    backend = LocalBackend(tmp_path)
    valid = {process_payload(w, r) for w in range(PROCESSES) for r in range(ROUNDS)}
    reads = 0
    try:
        start.set()
        while any(worker.is_alive() for worker in workers):
            for info in backend.list():
                data = backend.get(info.key)
                assert data in valid, f"partial or foreign object under {info.key}"
                reads += 1
    finally:
        for worker in workers:
            worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES
    assert reads > 0

    expected = {f"packs/{w:02x}/{r:04d}" for w in range(PROCESSES) for r in range(ROUNDS)}
    assert {info.key for info in backend.list()} == expected | {SHARED_KEY}
    for key in expected:
        _, writer_hex, round_dec = key.split("/")
        writer, round_ = int(writer_hex, 16), int(round_dec)
        assert backend.get(key) == process_payload(writer, round_)
    assert backend.get(SHARED_KEY) in {process_payload(w, ROUNDS - 1) for w in range(PROCESSES)}


def test_killed_writer_leaves_only_whole_objects(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    writer = ctx.Process(target=write_until_killed, args=(str(tmp_path), ready))
    writer.start()
    try:
        assert ready.wait(timeout=60), "writer never finished a first object"
        time.sleep(0.2)
    finally:
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(timeout=30)
    assert writer.exitcode == -signal.SIGKILL

    backend = LocalBackend(tmp_path)
    infos = list(backend.list())
    assert infos, "no object survived"
    for info in infos:
        index = int(info.key.removeprefix("data/"))
        assert info.size_bytes == len(big_payload(index))
        assert backend.get(info.key) == big_payload(index)
    keys = sorted(info.key for info in infos)
    assert keys == [f"data/{i:06d}" for i in range(len(keys))]


def test_leftover_temp_files_are_not_listed(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.put("config", b"cfg")
    backend.put("packs/ab/ab01", b"pack")
    (tmp_path / ".tmp-xyz").write_bytes(b"half a config")
    (tmp_path / "packs" / "ab" / f"{TEMP_PREFIX}ab02-0123456789ab").write_bytes(b"half")
    (tmp_path / "packs" / "cd").mkdir()
    (tmp_path / "packs" / "cd" / f"{TEMP_PREFIX}cd01-0123456789ab").write_bytes(b"")

    expected = {"config": 3, "packs/ab/ab01": 4}
    assert {i.key: i.size_bytes for i in backend.list()} == expected
    assert [i.key for i in backend.list("packs/")] == ["packs/ab/ab01"]
    assert [i.key for i in backend.list("packs/ab/")] == ["packs/ab/ab01"]
    assert list(backend.list("packs/cd/")) == []
    assert list(backend.list(".tmp")) == []
    assert list(backend.list("packs/ab/.tmp-")) == []


def test_put_leaves_no_temp_files(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    for index in range(5):
        backend.put(f"packs/ab/{index}", b"x" * index)
        backend.put("config", b"c" * index)
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(TEMP_PREFIX)]
    assert leftovers == []


def test_failed_put_keeps_old_object_and_leaves_no_temp_file(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.put("packs/ab/ab01", b"old")
    (tmp_path / "snap").mkdir()
    (tmp_path / "snap" / "s1").mkdir()  # a directory where the object should go
    with pytest.raises(StorageError):
        backend.put("snap/s1", b"new")
    assert backend.get("packs/ab/ab01") == b"old"
    assert [p.name for p in (tmp_path / "snap").iterdir()] == ["s1"]


ROOT_IS_FILE_CALLS: dict[str, Callable[[LocalBackend], object]] = {
    "put": lambda b: b.put("packs/ab/ab01", b"x"),
    "get": lambda b: b.get("packs/ab/ab01"),
    "get-top-level": lambda b: b.get("config"),
    "stat": lambda b: b.stat("packs/ab/ab01"),
    "stat-top-level": lambda b: b.stat("config"),
    "list": lambda b: list(b.list()),
    "list-prefix": lambda b: list(b.list("packs/")),
    "delete": lambda b: b.delete("packs/ab/ab01"),
}


@pytest.mark.parametrize("operation", sorted(ROOT_IS_FILE_CALLS))
def test_root_is_a_file_raises_storage_error(tmp_path: Path, operation: str) -> None:
    root = tmp_path / "repo"
    root.write_bytes(b"not a directory")
    with pytest.raises(StorageError):
        ROOT_IS_FILE_CALLS[operation](LocalBackend(root))


def test_missing_root_lists_nothing_and_put_creates_it(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "does" / "not" / "exist")
    assert list(backend.list()) == []
    backend.put("config", b"c")
    assert backend.get("config") == b"c"


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="needs POSIX modes; root ignores them"
)
def test_permission_errors_raise_storage_error(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.put("packs/ab/ab01", b"pack")
    (tmp_path / "packs" / "ab" / "ab01").chmod(0)
    locked = tmp_path / "packs" / "ab"
    try:
        with pytest.raises(StorageError):
            backend.get("packs/ab/ab01")
        locked.chmod(0o500)  # readable, not writable
        with pytest.raises(StorageError):
            backend.put("packs/ab/ab02", b"x")
        locked.chmod(0)
        with pytest.raises(StorageError):
            list(backend.list())
    finally:
        locked.chmod(0o700)
        (locked / "ab01").chmod(0o600)
