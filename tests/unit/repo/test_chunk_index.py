"""ChunkIndex: the compact in-memory map chunk id → location."""

from __future__ import annotations

import os
import threading

import pytest

from e3backup.repo import chunk_index
from e3backup.repo.chunk_index import ChunkIndex, ChunkLocation

PACK_A = b"\xaa" * 32
PACK_B = b"\xbb" * 32


def _loc(n: int, pack: bytes = PACK_A) -> ChunkLocation:
    return ChunkLocation(pack, n % 2, n * 100, n + 1, 2 * n + 7)


@pytest.fixture(params=[65536, 1, 3], ids=["default-threshold", "merge-every-add", "threshold-3"])
def threshold(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(chunk_index, "_MERGE_THRESHOLD", request.param)
    return int(request.param)


def test_empty() -> None:
    index = ChunkIndex()
    assert len(index) == 0
    assert index.get(os.urandom(32)) is None
    assert os.urandom(32) not in index
    assert list(index.items()) == []
    assert index.pack_ids() == []


def test_add_get_contains(threshold: int) -> None:
    index = ChunkIndex()
    ids = [os.urandom(32) for _ in range(50)]
    for n, cid in enumerate(ids):
        index.add(cid, _loc(n, PACK_A if n < 25 else PACK_B))
        assert cid in index  # visible immediately, merged or not
    assert len(index) == 50
    for n, cid in enumerate(ids):
        assert index.get(cid) == _loc(n, PACK_A if n < 25 else PACK_B)
    assert os.urandom(32) not in index
    assert set(index.pack_ids()) <= {PACK_A, PACK_B}


def test_add_many_and_items_return_everything(threshold: int) -> None:
    index = ChunkIndex()
    expected = {os.urandom(32): _loc(n, PACK_A if n % 3 else PACK_B) for n in range(100)}
    index.add_many(expected.items())
    assert dict(index.items()) == expected
    assert len(index) == 100
    assert set(index.pack_ids()) == {PACK_A, PACK_B}
    # items() merged everything; later additions still show up
    extra = os.urandom(32)
    index.add(extra, _loc(5))
    assert dict(index.items()) == {**expected, extra: _loc(5)}


def test_merge_threshold_crossing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunk_index, "_MERGE_THRESHOLD", 4)
    index = ChunkIndex()
    ids = [os.urandom(32) for _ in range(10)]
    for n, cid in enumerate(ids[:3]):
        index.add(cid, _loc(n))
    assert len(index._recent) == 3 and len(index._keys) == 0
    index.add(ids[3], _loc(3))  # the 4th addition merges
    assert len(index._recent) == 0 and len(index._keys) == 4
    for n, cid in enumerate(ids[4:], start=4):
        index.add(cid, _loc(n))
    assert len(index._keys) == 8 and len(index._recent) == 2
    assert list(index._keys) == sorted(index._keys)
    for n, cid in enumerate(ids):
        assert index.get(cid) == _loc(n)


def test_ids_sharing_a_prefix_are_distinguished(threshold: int) -> None:
    prefix = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    ids = [prefix + os.urandom(24) for _ in range(20)]
    ids.append(prefix + bytes(24))
    ids.append(prefix + b"\xff" * 24)
    index = ChunkIndex()
    for n, cid in enumerate(ids):
        index.add(cid, _loc(n))
    for n, cid in enumerate(ids):
        assert index.get(cid) == _loc(n)
    assert index.get(prefix + b"\x42" * 24) is None
    assert index.get(b"\x01" + prefix[1:] + os.urandom(24)) is None
    assert len(dict(index.items())) == len(ids)


def test_extreme_ids(threshold: int) -> None:
    index = ChunkIndex()
    low, high = bytes(32), b"\xff" * 32
    index.add(high, _loc(1))
    index.add(low, _loc(2))
    index.add(b"\x80" + bytes(31), _loc(3))  # sign bit of the 8-byte key
    assert index.get(low) == _loc(2)
    assert index.get(high) == _loc(1)
    assert index.get(b"\x80" + bytes(31)) == _loc(3)


def test_adding_a_known_id_again_keeps_one_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunk_index, "_MERGE_THRESHOLD", 1)
    index = ChunkIndex()
    cid = os.urandom(32)
    index.add(cid, _loc(1))
    index.add(cid, _loc(2, PACK_B))  # the same chunk stored twice (e.g. two crashed backups)
    assert index.get(cid) is not None
    assert len(list(index.items())) == 1


def test_large_offsets_round_trip(threshold: int) -> None:
    index = ChunkIndex()
    loc = ChunkLocation(PACK_A, 1, 2**32 - 1, 2**32 - 2, 2**31)
    cid = os.urandom(32)
    index.add(cid, loc)
    assert index.get(cid) == loc
    assert dict(index.items()) == {cid: loc}


def test_concurrent_adds_and_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunk_index, "_MERGE_THRESHOLD", 37)
    index = ChunkIndex()
    per_thread = 500
    packs = [os.urandom(32) for _ in range(8)]
    ids = [[os.urandom(32) for _ in range(per_thread)] for _ in range(8)]
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(t: int) -> None:
        try:
            start.wait()
            for n, cid in enumerate(ids[t]):
                if n % 2:
                    index.add(cid, _loc(n, packs[t]))
                else:
                    index.add_many([(cid, _loc(n, packs[t]))])
                assert index.get(cid) == _loc(n, packs[t])
                if n % 100 == 0:
                    list(index.items())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(index) == 8 * per_thread
    everything = dict(index.items())
    assert len(everything) == 8 * per_thread
    for t in range(8):
        for n, cid in enumerate(ids[t]):
            assert everything[cid] == _loc(n, packs[t])
    assert sorted(index.pack_ids()) == sorted(packs)
