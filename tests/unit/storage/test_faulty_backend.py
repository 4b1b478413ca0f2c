"""FaultyBackend: each fault fires exactly when asked, and deterministically per seed."""

from __future__ import annotations

import pytest

from e3backup.core.errors import StorageError, TransientStorageError
from e3backup.storage.faulty import FaultyBackend
from e3backup.storage.memory import MemoryBackend

DATA = bytes(range(256)) * 64


def test_fails_the_nth_call_of_a_method() -> None:
    backend = FaultyBackend(MemoryBackend(), fail_calls={"put": {2, 4}})
    backend.put("a", b"1")
    with pytest.raises(StorageError) as excinfo:
        backend.put("b", b"2")
    assert not isinstance(excinfo.value, TransientStorageError)
    backend.put("c", b"3")
    with pytest.raises(StorageError):
        backend.put("d", b"4")
    backend.put("e", b"5")
    assert sorted(i.key for i in backend.inner.list()) == ["a", "c", "e"]
    assert backend.injected["fail"] == 2


def test_transient_failures_then_success() -> None:
    backend = FaultyBackend(MemoryBackend(), transient_failures={"get": 2})
    backend.inner.put("k", b"v")
    for _ in range(2):
        with pytest.raises(TransientStorageError):
            backend.get("k")
    assert backend.get("k") == b"v"
    assert backend.calls["get"] == 3


def test_fail_after_is_a_lasting_outage() -> None:
    backend = FaultyBackend(MemoryBackend(), fail_after=2)
    backend.put("a", b"1")
    assert backend.get("a") == b"1"
    with pytest.raises(StorageError):
        backend.put("b", b"2")
    with pytest.raises(StorageError):
        backend.stat("a")
    with pytest.raises(StorageError):
        list(backend.list())
    backend.close()  # closing never fails
    assert backend.injected["outage"] == 3


def test_flip_bits_changes_exactly_one_bit() -> None:
    backend = FaultyBackend(MemoryBackend(), flip_bits=1.0)
    backend.put("k", DATA)
    flipped = backend.get("k")
    diff = [a ^ b for a, b in zip(flipped, DATA, strict=True) if a != b]
    assert len(diff) == 1
    assert bin(diff[0]).count("1") == 1
    assert backend.inner.get("k") == DATA  # stored data is intact


def test_truncate_puts_stores_a_prefix_silently() -> None:
    backend = FaultyBackend(MemoryBackend(), truncate_puts=1.0)
    backend.put("k", DATA)
    stored = backend.inner.get("k")
    assert len(stored) < len(DATA)
    assert DATA.startswith(stored)
    assert backend.injected["truncate"] == 1


def test_faults_are_limited_to_a_key_prefix() -> None:
    backend = FaultyBackend(MemoryBackend(), flip_bits=1.0, truncate_puts=1.0, keys="packs/")
    backend.put("config", DATA)
    backend.put("packs/p1", DATA)
    assert backend.get("config") == DATA
    assert backend.inner.get("packs/p1") != DATA
    assert backend.calls["put"] == 1


@pytest.mark.parametrize("seed", [0, 7])
def test_same_seed_same_faults(seed: int) -> None:
    def run() -> list[bytes]:
        backend = FaultyBackend(MemoryBackend(), flip_bits=0.5, seed=seed)
        backend.put("k", DATA)
        return [backend.get("k") for _ in range(20)]

    first = run()
    assert first == run()
    assert 0 < sum(data != DATA for data in first) < 20


def test_unknown_method_is_rejected() -> None:
    with pytest.raises(ValueError, match="gett"):
        FaultyBackend(MemoryBackend(), fail_calls={"gett": {1}})
