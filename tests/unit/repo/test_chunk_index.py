"""ChunkIndex: the compact in-memory map chunk id → location."""

from __future__ import annotations

import os
import threading

import blake3
import numpy as np
import pytest

from e3backup.repo import chunk_index, formats
from e3backup.repo.chunk_index import ChunkIndex, ChunkLocation, IndexEntries
from e3backup.repo.index_file import (
    IndexObjectWriter,
    decode_index,
    decode_index_entries,
    encode_index,
    encode_index_entries,
)
from e3backup.repo.index_rows import concat_entries, rows_in_packs
from e3backup.repo.repository import Repository
from e3backup.storage.backend import Backend

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
    assert len(index._recent) == 3 and len(index._sorted) == 0
    index.add(ids[3], _loc(3))  # the 4th addition merges
    assert len(index._recent) == 0 and len(index._sorted) == 4
    for n, cid in enumerate(ids[4:], start=4):
        index.add(cid, _loc(n))
    assert len(index._sorted) == 8 and len(index._recent) == 2
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


def test_ids_differing_only_in_low_key_bits(threshold: int) -> None:
    """Keys equal but for their lowest bits land in one bucket with one sub-key: a run."""
    ids = [bytes([n]) + b"\x11" * 7 + os.urandom(24) for n in range(60)]
    index = ChunkIndex()
    index.add_many([(cid, _loc(n)) for n, cid in enumerate(ids[:30])])
    for n, cid in enumerate(ids[30:50], start=30):
        index.add(cid, _loc(n))
    for n, cid in enumerate(ids[:50]):
        assert index.get(cid) == _loc(n)
    _assert_batch_matches_single(index, ids)
    assert dict(index.items()) == {cid: _loc(n) for n, cid in enumerate(ids[:50])}


def test_extreme_ids(threshold: int) -> None:
    index = ChunkIndex()
    low, high = bytes(32), b"\xff" * 32
    index.add(high, _loc(1))
    index.add(low, _loc(2))
    index.add(b"\x80" + bytes(31), _loc(3))  # sign bit of the 8-byte key
    assert index.get(low) == _loc(2)
    assert index.get(high) == _loc(1)
    assert index.get(b"\x80" + bytes(31)) == _loc(3)


def test_adding_a_known_id_again_keeps_the_first_location(threshold: int) -> None:
    """The same chunk stored twice (two crashed backups, say): one entry, the first one wins,
    whether the first copy was merged already or still waits among the recent additions."""
    index = ChunkIndex()
    cid, other = os.urandom(32), os.urandom(32)
    index.add(cid, _loc(1))
    index.add(cid, _loc(2, PACK_B))
    index.add_many([(other, _loc(3)), (cid, _loc(4, PACK_B)), (other, _loc(5))])
    assert index.get(cid) == _loc(1)
    assert index.get(other) == _loc(3)
    assert len(index) == 2
    assert dict(index.items()) == {cid: _loc(1), other: _loc(3)}
    index.add_entries(IndexEntries.from_items([(cid, _loc(6)), (other, _loc(7))]))
    assert index.get(cid) == _loc(1) and index.get(other) == _loc(3)
    assert len(index) == 2 and len(list(index.items())) == 2


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


# --- batched lookups, bulk loading, copies ------------------------------------------------------


def _ids(n: int) -> list[bytes]:
    return [os.urandom(32) for _ in range(n)]


def _assert_batch_matches_single(index: ChunkIndex, ids: list[bytes]) -> None:
    located = index.locate_many(b"".join(ids))
    assert len(located) == len(ids)
    for i, cid in enumerate(ids):
        assert located.get(i) == index.get(cid)
        assert bool(located.found[i]) == (cid in index)
    assert list(index.contains_many(b"".join(ids))) == [cid in index for cid in ids]


def test_batched_lookup_equals_single_lookups(threshold: int) -> None:
    index = ChunkIndex()
    known = _ids(200)
    for n, cid in enumerate(known):
        index.add(cid, _loc(n, PACK_A if n % 2 else PACK_B))
    prefix = known[0][:8]
    twins = [prefix + os.urandom(24) for _ in range(5)]  # same key as a known id
    index.add_many([(cid, _loc(1000 + n)) for n, cid in enumerate(twins[:3])])
    query = [*known, *twins, *_ids(50), bytes(32), b"\xff" * 32]
    query.reverse()
    _assert_batch_matches_single(index, query)
    located = index.locate_many(b"".join(known))
    assert located.found.all()
    assert [located.get(i) for i in range(len(known))] == [
        _loc(n, PACK_A if n % 2 else PACK_B) for n in range(len(known))
    ]
    assert not index.contains_many(b"".join(twins[3:])).any()
    assert index.locate_many(b"").found.shape == (0,)
    with pytest.raises(ValueError):
        index.locate_many(b"x" * 33)


def test_bulk_load_keeps_every_copy_and_resolves_to_the_first() -> None:
    shared = _ids(30)
    first = IndexEntries.from_items(
        [(cid, _loc(n)) for n, cid in enumerate(shared)] + [(shared[0], _loc(99, PACK_B))]
    )
    only = _ids(10)
    second = IndexEntries.from_items(
        [(cid, _loc(200 + n, PACK_B)) for n, cid in enumerate(shared[::3])]
        + [(cid, _loc(300 + n)) for n, cid in enumerate(only)]
    )
    index = ChunkIndex.from_entries(iter([first, second]))
    assert len(index) == 40
    assert index.row_count == len(first) + len(second)
    assert dict(index.items()) == {
        **{cid: _loc(n) for n, cid in enumerate(shared)},
        **{cid: _loc(300 + n) for n, cid in enumerate(only)},
    }
    canon = index.canonical_rows()
    assert canon[30] == 0  # the copy of shared[0] inside the first part
    copies = len(first) + np.arange(10)
    assert list(canon[copies]) == list(range(0, 30, 3))
    assert list(index.find_rows(b"".join(shared[:2]) + os.urandom(32))) == [0, 1, -1]
    packs = index.column("pack")
    assert [index.pack_ids()[p] for p in packs[[0, 30, 31]]] == [PACK_A, PACK_B, PACK_B]
    _assert_batch_matches_single(index, [*shared, *only, *_ids(5)])


def test_many_entries_well_past_the_merge_threshold() -> None:
    """300k entries in every way they arrive (bulk, batches, single adds), with re-adds and ids
    sharing their first 8 bytes: every lookup gives the exact first location."""
    rng = np.random.default_rng(8)
    raw = rng.integers(0, 256, size=(300_000, 32), dtype=np.uint8)
    raw[1::1000, :8] = raw[0:-1:1000, :8]  # pairs sharing the 8-byte key
    ids = [row.tobytes() for row in raw]
    packs = [os.urandom(32) for _ in range(50)]
    locs = [ChunkLocation(packs[n % 50], n % 2, n * 7, n % 4096 + 1, n) for n in range(len(ids))]
    expected = dict(zip(ids, locs, strict=True))
    index = ChunkIndex.from_entries(
        [IndexEntries.from_items(zip(ids[:100_000], locs, strict=False))]
    )
    index.add_many(zip(ids[100_000:200_000], locs[100_000:200_000], strict=True))
    for cid, loc in zip(ids[200_000:], locs[200_000:], strict=True):
        index.add(cid, loc)
    late = ChunkLocation(PACK_B, 1, 1, 1, 1)
    index.add_many([(cid, late) for cid in ids[::7]])  # re-adds never move an entry
    index.add(ids[-1], late)
    assert len(index) == len(ids)
    located = index.locate_many(raw.tobytes())
    assert located.found.all()
    offsets = np.array([loc.offset for loc in locs], dtype=np.uint32)
    assert np.array_equal(located.rows["offset"], offsets)
    assert [index.pack_ids()[p] for p in located.rows["pack"][:100]] == [
        loc.pack_id for loc in locs[:100]
    ]
    for n in range(0, len(ids), 997):
        assert index.get(ids[n]) == expected[ids[n]]
    absent = rng.integers(0, 256, size=(1000, 32), dtype=np.uint8)
    absent[::10, :8] = raw[::3000, :8]  # known keys, unknown ids
    assert not index.contains_many(absent.tobytes()).any()
    assert dict(index.items()) == expected


def test_index_objects_decode_to_the_same_entries_as_rows() -> None:
    pack_ids = [os.urandom(32) for _ in range(3)]
    entries = [
        (os.urandom(32), ChunkLocation(pack_ids[n // 40], n % 2, 2**32 - 1 - n, n, 2**31 + n))
        for n in range(100)
    ]
    entries.append((os.urandom(32), ChunkLocation(pack_ids[0], 0, 5, 6, 7)))  # pack seen again
    data = encode_index(entries)
    decoded = decode_index_entries(data)
    assert list(decoded.items()) == list(decode_index(data)) == entries
    assert sorted(decoded.pack_ids) == sorted(pack_ids)
    assert encode_index_entries(decoded) == data
    empty = encode_index([])
    assert (
        len(decode_index_entries(empty)) == 0
        and encode_index_entries(decode_index_entries(empty)) == empty
    )


def test_entries_without_damaged_blobs() -> None:
    entries = IndexEntries.from_items(
        [(b"\x01" * 32, _loc(1)), (b"\x01" * 32, _loc(2, PACK_B)), (b"\x02" * 32, _loc(3))]
    )
    kept = entries.without({(b"\x01" * 32, PACK_B), (b"\x03" * 32, PACK_A)})
    assert list(kept.items()) == [(b"\x01" * 32, _loc(1)), (b"\x02" * 32, _loc(3))]
    assert entries.without(set()) is entries


def test_index_object_writer_stores_what_encode_index_would(repo_backend: Backend) -> None:
    """Parts with their own pack tables, cut across object boundaries, give the same objects
    (same bytes, same keys) as encoding the concatenated Python entries in slices."""
    repo = Repository.init(repo_backend, "pw")
    items = [(os.urandom(32), _loc(n, bytes([n % 5]) * 32)) for n in range(23)]
    writer = IndexObjectWriter(repo.backend, repo.codec, per_object=7)
    for start, end in ((0, 3), (3, 3), (3, 12), (12, 23)):
        writer.add(IndexEntries.from_items(items[start:end]))
    keys = writer.close()
    payloads = [encode_index(items[i : i + 7]) for i in range(0, len(items), 7)]
    assert keys == [formats.INDEX_PREFIX + blake3.blake3(p).hexdigest() for p in payloads]
    assert [
        list(decode_index(repo.codec.decode(repo.backend.get(k), k.encode()))) for k in keys
    ] == [items[i : i + 7] for i in range(0, len(items), 7)]
    whole = concat_entries([IndexEntries.from_items(items[:5]), IndexEntries.from_items(items[5:])])
    assert list(whole.items()) == items
    assert rows_in_packs(whole, {bytes([1]) * 32}).tolist() == [n % 5 == 1 for n in range(23)]
