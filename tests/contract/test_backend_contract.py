"""The `Backend` contract: every rule in `storage/backend.py`, run against every backend."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from e3backup.core.errors import ObjectNotFound, RangeOutsideObject, StorageError
from e3backup.storage.backend import Backend, BackendProperties, ObjectInfo

MIB = 1024 * 1024
PAYLOAD = bytes(range(256)) * 4  # 1,024 distinct-looking bytes for range tests


def listed(backend: Backend, prefix: str = "") -> dict[str, int]:
    """`list(prefix)` as {key: size}, failing on duplicate keys."""
    infos = list(backend.list(prefix))
    result = {info.key: info.size_bytes for info in infos}
    assert len(result) == len(infos), f"duplicate keys in listing: {infos}"
    return result


# --- put / get -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", os.urandom(5 * MIB)],
    ids=["empty", "one-byte", "5MiB"],
)
def test_put_get_round_trip(backend: Backend, data: bytes) -> None:
    backend.put("data/obj", data)
    assert backend.get("data/obj") == data
    assert backend.stat("data/obj") == ObjectInfo("data/obj", len(data))


def test_put_accepts_memoryview(backend: Backend) -> None:
    buffer = bytearray(b"0123456789")
    backend.put("mv/whole", memoryview(buffer))
    backend.put("mv/slice", memoryview(buffer)[2:5])
    buffer[:] = b"XXXXXXXXXX"  # the backend must have copied, not kept a reference
    assert backend.get("mv/whole") == b"0123456789"
    assert backend.get("mv/slice") == b"234"


def test_get_returns_bytes(backend: Backend) -> None:
    backend.put("k", memoryview(b"abc"))
    assert type(backend.get("k")) is bytes
    assert type(backend.get("k", 1, 1)) is bytes


def test_overwrite_replaces_content_and_size(backend: Backend) -> None:
    backend.put("snapshots/s1", b"first version, longer")
    backend.put("snapshots/s1", b"second")
    assert backend.get("snapshots/s1") == b"second"
    assert backend.stat("snapshots/s1").size_bytes == len(b"second")
    assert listed(backend) == {"snapshots/s1": len(b"second")}


def test_overwrite_is_idempotent(backend: Backend) -> None:
    backend.put("packs/ab/abcd", b"same")
    backend.put("packs/ab/abcd", b"same")
    assert backend.get("packs/ab/abcd") == b"same"
    assert listed(backend) == {"packs/ab/abcd": 4}


def test_overwrite_is_atomic_for_concurrent_readers(backend: Backend) -> None:
    old, new = b"o" * (2 * MIB), b"n" * (MIB // 3)
    backend.put("config", old)
    stop = threading.Event()
    seen: list[bytes] = []

    def reader() -> None:
        while not stop.is_set():
            seen.append(backend.get("config"))

    with ThreadPoolExecutor(max_workers=3) as pool:
        readers = [pool.submit(reader) for _ in range(3)]
        try:
            for i in range(20):
                backend.put("config", new if i % 2 == 0 else old)
        finally:
            stop.set()
        for future in readers:
            future.result()
    assert seen, "readers never ran"
    assert {len(data) for data in seen} <= {len(old), len(new)}
    assert all(data in (old, new) for data in seen)


# --- ranges ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (0, None, PAYLOAD),
        (100, None, PAYLOAD[100:]),
        (100, 50, PAYLOAD[100:150]),
        (0, 1, PAYLOAD[:1]),
        (100, 0, b""),
        (len(PAYLOAD), 0, b""),
        (len(PAYLOAD), None, b""),
        (len(PAYLOAD) - 24, 24, PAYLOAD[-24:]),
        (0, len(PAYLOAD), PAYLOAD),
    ],
    ids=[
        "whole",
        "offset-only",
        "offset-and-length",
        "first-byte",
        "zero-length",
        "zero-length-at-end",
        "offset-at-end",
        "ends-exactly-at-end",
        "full-length",
    ],
)
def test_get_range(backend: Backend, offset: int, length: int | None, expected: bytes) -> None:
    backend.put("r", PAYLOAD)
    assert backend.get("r", offset, length) == expected


def test_get_range_keyword_arguments(backend: Backend) -> None:
    backend.put("r", PAYLOAD)
    assert backend.get("r", offset=10, length=5) == PAYLOAD[10:15]
    assert backend.get("r", length=5) == PAYLOAD[:5]


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (len(PAYLOAD) - 10, 11),
        (len(PAYLOAD) + 1, None),
        (len(PAYLOAD) + 1, 0),
        (0, len(PAYLOAD) + 1),
    ],
    ids=["length-past-end", "offset-past-end", "zero-length-past-end", "one-byte-too-long"],
)
def test_get_range_past_the_end_raises_range_outside_object(
    backend: Backend, offset: int, length: int | None
) -> None:
    """Distinct from other storage errors: for a pack, the repository calls it truncation."""
    backend.put("r", PAYLOAD)
    with pytest.raises(RangeOutsideObject, match="outside"):
        backend.get("r", offset, length)


@pytest.mark.parametrize(
    ("offset", "length"),
    [(-1, None), (-1, 1), (0, -1)],
    ids=["negative-offset", "negative-offset-with-length", "negative-length"],
)
def test_get_invalid_range_raises(backend: Backend, offset: int, length: int | None) -> None:
    backend.put("r", PAYLOAD)
    with pytest.raises(StorageError) as excinfo:
        backend.get("r", offset, length)
    assert not isinstance(excinfo.value, RangeOutsideObject)


def test_get_bad_range_is_not_object_not_found(backend: Backend) -> None:
    backend.put("r", b"abc")
    with pytest.raises(StorageError) as excinfo:
        backend.get("r", 2, 5)
    assert not isinstance(excinfo.value, ObjectNotFound)


def test_get_range_on_empty_object(backend: Backend) -> None:
    backend.put("empty", b"")
    assert backend.get("empty", 0, 0) == b""
    with pytest.raises(RangeOutsideObject):
        backend.get("empty", 0, 1)


# --- missing objects ---------------------------------------------------------------------------


def test_object_not_found_is_a_storage_error() -> None:
    assert issubclass(ObjectNotFound, StorageError)


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.get("missing/key"),
        lambda b: b.get("missing/key", 0, 0),
        lambda b: b.get("missing/key", 5, 10),
        lambda b: b.stat("missing/key"),
    ],
    ids=["get", "get-zero-range", "get-range", "stat"],
)
def test_missing_key_raises_object_not_found(
    backend: Backend, call: Callable[[Backend], object]
) -> None:
    backend.put("missing/other", b"x")  # a sibling must not make the key exist
    with pytest.raises(ObjectNotFound):
        call(backend)


@pytest.mark.parametrize("key", ["packs", "packs/ab"])
def test_key_prefix_of_other_keys_is_not_an_object(backend: Backend, key: str) -> None:
    """'packs/ab' is a directory to a filesystem backend but never an object by itself."""
    backend.put("packs/ab/ab01", b"pack")
    with pytest.raises(ObjectNotFound):
        backend.get(key)
    with pytest.raises(ObjectNotFound):
        backend.stat(key)
    backend.delete(key)  # deleting a missing key is not an error
    assert listed(backend) == {"packs/ab/ab01": 4}


def test_deleted_key_is_missing(backend: Backend) -> None:
    backend.put("locks/l1", b"lock")
    backend.delete("locks/l1")
    with pytest.raises(ObjectNotFound):
        backend.get("locks/l1")
    with pytest.raises(ObjectNotFound):
        backend.stat("locks/l1")
    assert listed(backend) == {}


# --- stat ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 4097])
def test_stat_size(backend: Backend, size: int) -> None:
    backend.put("index/i1", b"z" * size)
    info = backend.stat("index/i1")
    assert info.key == "index/i1"
    assert info.size_bytes == size


# --- list ------------------------------------------------------------------------------------

TREE = {
    "config": 3,
    "keys/k1": 10,
    "index/i1": 5,
    "index/i2": 6,
    "indexes/x": 7,
    "packs/ab/ab01": 11,
    "packs/ab/ab02": 12,
    "packs/ac/ac01": 13,
    "packs/b0/b001": 14,
    "snapshots/2024/01/s1": 15,
}


@pytest.fixture
def tree(backend: Backend) -> Backend:
    for key, size in TREE.items():
        backend.put(key, b"t" * size)
    return backend


def expected_for(prefix: str) -> dict[str, int]:
    return {key: size for key, size in TREE.items() if key.startswith(prefix)}


@pytest.mark.parametrize(
    "prefix",
    [
        "",
        "index/",
        "index",
        "indexes/",
        "packs/",
        "packs/a",
        "packs/ab/",
        "packs/ab/ab0",
        "packs/ab/ab01",
        "packs",
        "snapshots/2024/",
        "snapshots/2024/01/s",
        "c",
        "config",
    ],
)
def test_list_by_prefix(tree: Backend, prefix: str) -> None:
    assert listed(tree, prefix) == expected_for(prefix)


def test_list_prefix_is_exact(tree: Backend) -> None:
    assert set(listed(tree, "index/")) == {"index/i1", "index/i2"}
    assert set(listed(tree, "packs/a")) == {"packs/ab/ab01", "packs/ab/ab02", "packs/ac/ac01"}


def test_list_default_prefix_lists_everything(tree: Backend) -> None:
    assert {i.key: i.size_bytes for i in tree.list()} == TREE


@pytest.mark.parametrize(
    "prefix",
    ["nothing/", "packs/zz", "packs/ab/ab03", "config/", "packs/ab/ab01/", "zzz"],
)
def test_list_unmatched_prefix_is_empty(tree: Backend, prefix: str) -> None:
    assert listed(tree, prefix) == {}


def test_list_empty_backend(backend: Backend) -> None:
    assert listed(backend) == {}
    assert listed(backend, "packs/") == {}


def test_list_shows_only_put_objects(backend: Backend) -> None:
    """No temporary, marker or directory entries: exactly the keys that were put."""
    backend.put("packs/ab/ab01", b"x" * 100)
    backend.put("packs/ab/ab02", os.urandom(MIB))
    backend.put("packs/ab/ab01", b"y" * 50)
    backend.put("packs/cd/cd01", b"")
    backend.delete("packs/cd/cd01")
    assert listed(backend) == {"packs/ab/ab01": 50, "packs/ab/ab02": MIB}


def test_list_returns_object_infos(tree: Backend) -> None:
    infos = list(tree.list("keys/"))
    assert infos == [ObjectInfo("keys/k1", 10)]


# --- delete ----------------------------------------------------------------------------------


def test_delete_removes_only_that_key(tree: Backend) -> None:
    tree.delete("packs/ab/ab01")
    expected = dict(TREE)
    del expected["packs/ab/ab01"]
    assert listed(tree) == expected
    assert tree.get("packs/ab/ab02") == b"t" * 12


def test_delete_is_idempotent(backend: Backend) -> None:
    backend.put("locks/l1", b"lock")
    backend.delete("locks/l1")
    backend.delete("locks/l1")
    backend.delete("never/existed/at/all")
    assert listed(backend) == {}


def test_put_after_delete(backend: Backend) -> None:
    backend.put("k", b"one")
    backend.delete("k")
    backend.put("k", b"two")
    assert backend.get("k") == b"two"


# --- keys ------------------------------------------------------------------------------------

INVALID_KEYS = ["", "/abs", "a/../b", "a//b", "..", ".", "a/./b", "a/", "trailing/"]

OPERATIONS: dict[str, Callable[[Backend, str], object]] = {
    "put": lambda b, key: b.put(key, b"data"),
    "get": lambda b, key: b.get(key),
    "stat": lambda b, key: b.stat(key),
    "delete": lambda b, key: b.delete(key),
}


@pytest.mark.parametrize("key", INVALID_KEYS)
@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_invalid_key_raises_value_error(backend: Backend, operation: str, key: str) -> None:
    backend.put("a/b", b"existing")
    with pytest.raises(ValueError):
        OPERATIONS[operation](backend, key)
    assert listed(backend) == {"a/b": 8}


@pytest.mark.parametrize("key", ["a", "a.b", "a/b/c/d/e", "-x_y.z", "..a", "a..", ".hidden"])
def test_valid_keys_round_trip(backend: Backend, key: str) -> None:
    backend.put(key, key.encode())
    assert backend.get(key) == key.encode()
    assert listed(backend) == {key: len(key)}


# --- properties ------------------------------------------------------------------------------


def test_properties(backend: Backend) -> None:
    props = backend.properties()
    assert isinstance(props, BackendProperties)
    assert isinstance(props.location, str)
    assert props.location
    assert isinstance(props.parallelism, int)
    assert props.parallelism >= 1


# --- concurrency -----------------------------------------------------------------------------

THREADS = 8
KEYS_PER_THREAD = 20


def thread_payload(thread: int, index: int) -> bytes:
    return f"thread {thread} object {index} ".encode() * (1 + (thread * 37 + index * 11) % 200)


def test_concurrent_threads_distinct_and_identical_keys(backend: Backend) -> None:
    shared_payloads = {bytes([t]) * (1000 + t * 997) for t in range(THREADS)}
    barrier = threading.Barrier(THREADS)

    def work(thread: int) -> None:
        barrier.wait()
        shared = bytes([thread]) * (1000 + thread * 997)
        for index in range(KEYS_PER_THREAD):
            backend.put(f"packs/{thread:02x}/{index:04d}", thread_payload(thread, index))
            backend.put("shared/same", shared)
            backend.put("shared/idempotent", b"identical content")
            assert backend.get("shared/same") in shared_payloads
            assert backend.get("shared/idempotent") == b"identical content"
        for index in range(KEYS_PER_THREAD):
            key = f"packs/{thread:02x}/{index:04d}"
            assert backend.get(key) == thread_payload(thread, index)

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        for future in [pool.submit(work, t) for t in range(THREADS)]:
            future.result()

    expected = {
        f"packs/{t:02x}/{i:04d}": len(thread_payload(t, i))
        for t in range(THREADS)
        for i in range(KEYS_PER_THREAD)
    }
    shared = backend.get("shared/same")
    assert shared in shared_payloads
    expected["shared/same"] = len(shared)
    expected["shared/idempotent"] = len(b"identical content")
    assert listed(backend) == expected
    for key, size in expected.items():
        if key.startswith("packs/"):
            _, thread_hex, index_dec = key.split("/")
            assert backend.get(key) == thread_payload(int(thread_hex, 16), int(index_dec))
        assert backend.stat(key).size_bytes == size
