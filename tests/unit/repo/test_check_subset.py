"""check --read-data-subset, verification records, and parent choice after a failed check."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from e3backup.core.errors import UsageError
from e3backup.engines.image_backup import ImageBackupOptions, backup_image, restore_disk
from e3backup.repo import formats, verification
from e3backup.repo.check import DataSubset, check_repository
from e3backup.repo.manifest import Snapshot
from e3backup.repo.repository import Repository
from e3backup.sources.image import RawImageReader
from e3backup.storage.backend import Backend

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB
SIZE = 4 * MiB


@pytest.fixture
def repo(repo_backend: Backend) -> Repository:
    return Repository.init(repo_backend, "pw", chunk_size=CHUNK)


def _backup(repo: Repository, path: Path, extents: list[tuple[int, int]] | None = None) -> Snapshot:
    with RawImageReader.open(path) as reader:
        return backup_image(repo, path, reader, ImageBackupOptions(changed_extents=extents))


def _pack_keys(repo: Repository) -> set[str]:
    return {info.key for info in repo.backend.list(formats.PACKS_PREFIX)}


def _flip_byte(repo: Repository, key: str, at: int = 100) -> bytes:
    original: bytes = bytes(repo.backend.get(key))
    damaged = bytearray(original)
    damaged[at] ^= 0x40
    repo.backend.put(key, bytes(damaged))
    return original


# --- the subset rule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1/5", DataSubset(part=(1, 5))),
        ("5/5", DataSubset(part=(5, 5))),
        ("1/1", DataSubset(part=(1, 1))),
        ("10%", DataSubset(percent=10.0)),
        ("2.5%", DataSubset(percent=2.5)),
        ("100%", DataSubset(percent=100.0)),
    ],
)
def test_subset_parses(text: str, expected: DataSubset) -> None:
    assert DataSubset.parse(text) == expected
    assert DataSubset.parse(text).describe() == text


@pytest.mark.parametrize("text", ["0/5", "6/5", "1/0", "0%", "101%", "10", "a/b", "", "-1%"])
def test_subset_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        DataSubset.parse(text)


def test_parts_partition_the_packs_and_are_deterministic() -> None:
    packs = [os.urandom(32) for _ in range(200)]
    parts = [DataSubset(part=(n, 7)).select(packs) for n in range(1, 8)]
    assert sum(len(p) for p in parts) == len(packs)
    assert set().union(*parts) == set(packs)
    assert parts[2] == DataSubset(part=(3, 7)).select(list(reversed(packs)))
    # restic's rule: the first byte of the id, modulo t
    assert all(p[0] % 7 == 2 for p in parts[2])


def test_percent_picks_that_share_at_random() -> None:
    packs = [os.urandom(32) for _ in range(200)]
    first = DataSubset(percent=10).select(packs, random.Random(1))
    second = DataSubset(percent=10).select(packs, random.Random(2))
    assert len(first) == len(second) == 20
    assert first != second
    assert len(DataSubset(percent=0.1).select(packs)) == 1  # never zero packs
    assert DataSubset(percent=50).select([]) == set()


# --- check with a subset ----------------------------------------------------------------------


def _many_packs(repo: Repository, tmp_path: Path, count: int = 6) -> list[Snapshot]:
    """`count` snapshots of a changing random image: at least one new pack each."""
    path = tmp_path / "disk.img"
    snapshots = []
    for _ in range(count):
        path.write_bytes(os.urandom(SIZE // 4) + bytes(SIZE - SIZE // 4))
        snapshots.append(_backup(repo, path))
    return snapshots


def test_subset_reads_only_its_packs_and_finds_damage_there(
    repo: Repository, tmp_path: Path
) -> None:
    _many_packs(repo, tmp_path)
    pack_ids = [bytes.fromhex(key.rsplit("/", 1)[1]) for key in sorted(_pack_keys(repo))]
    victim = pack_ids[0]
    _flip_byte(repo, formats.pack_key(victim))
    t = 3
    n_victim = victim[0] % t + 1
    packs_read = 0
    for n in range(1, t + 1):
        report = check_repository(repo, subset=DataSubset(part=(n, t)))
        assert report.scope == f"read-data {n}/{t}"
        assert report.packs_checked == len(pack_ids)
        packs_read += report.packs_read
        assert report.ok == (n != n_victim), report.errors
    assert packs_read == len(pack_ids)  # t parts cover every pack exactly once
    assert check_repository(repo).ok  # structure alone cannot see a flipped bit


def test_full_percent_equals_read_data(repo: Repository, tmp_path: Path) -> None:
    _many_packs(repo, tmp_path, 3)
    full = check_repository(repo, read_data=True)
    subset = check_repository(repo, subset=DataSubset(percent=100))
    assert full.chunks_verified == subset.chunks_verified > 0
    assert full.packs_read == subset.packs_read == full.packs_checked


# --- verification records ---------------------------------------------------------------------


def test_records_damage_and_only_a_full_data_check_clears_it(
    repo: Repository, tmp_path: Path
) -> None:
    first, second = _many_packs(repo, tmp_path, 2)
    before = _pack_keys(repo)
    assert verification.load_record(repo, first.id) is None
    report = check_repository(repo, record=True)
    assert report.records_written == 2
    ok = verification.load_record(repo, first.id)
    assert ok is not None and ok.status == "ok" and ok.scope == "structure"

    third = _many_packs(repo, tmp_path, 1)[0]
    (new_pack,) = _pack_keys(repo) - before
    original = _flip_byte(repo, new_pack)
    report = check_repository(repo, read_data=True, record=True)
    assert report.damaged_snapshots == {third.id}
    record = verification.load_record(repo, third.id)
    assert record is not None and record.damaged and record.scope == "read-data"
    assert record.problems and "damaged" in record.problems[0]
    assert not verification.is_damaged(repo, second.id)

    repo.backend.put(new_pack, original)  # repaired
    check_repository(repo, record=True)  # structure only: cannot vouch for the data
    check_repository(repo, subset=DataSubset(percent=100), record=True)  # a subset neither
    assert verification.is_damaged(repo, third.id)
    check_repository(repo, read_data=True, record=True)
    assert not verification.is_damaged(repo, third.id)


def test_records_of_vanished_snapshots_are_dropped(repo: Repository, tmp_path: Path) -> None:
    first, second = _many_packs(repo, tmp_path, 2)
    check_repository(repo, record=True)
    repo.backend.delete(formats.SNAPSHOTS_PREFIX + first.id)
    check_repository(repo, record=True)
    keys = {info.key for info in repo.backend.list(formats.VERIFY_PREFIX)}
    assert keys == {verification.record_key(second.id)}


def test_an_unreadable_record_counts_as_damaged(repo: Repository, tmp_path: Path) -> None:
    (snapshot,) = _many_packs(repo, tmp_path, 1)
    repo.backend.put(verification.record_key(snapshot.id), b"garbage")
    assert verification.is_damaged(repo, snapshot.id)


# --- the backup engine never builds on a damaged snapshot -------------------------------------


def test_backup_skips_a_parent_that_failed_verification(repo: Repository, tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    image = bytearray(os.urandom(SIZE))
    path.write_bytes(image)
    first = _backup(repo, path)
    before = _pack_keys(repo)
    image[CHUNK * 3 : CHUNK * 3 + 10] = os.urandom(10)
    path.write_bytes(image)
    second = _backup(repo, path, [(CHUNK * 3, 10)])
    assert second.parent == first.id and second.disks[0].read_plan == "incremental"
    (second_pack,) = _pack_keys(repo) - before
    _flip_byte(repo, second_pack)
    assert not check_repository(repo, read_data=True, record=True).ok

    # Chunk 3 keeps the content of the damaged blob: the full read must store it afresh, not
    # dedup against the damaged copy (the restore below verifies every chunk).
    image[CHUNK * 9 : CHUNK * 9 + 10] = os.urandom(10)
    path.write_bytes(image)
    third = _backup(repo, path, [(CHUNK * 9, 10)])
    assert third.parent == first.id
    disk = third.disks[0]
    assert "parent failed verification" in disk.read_plan_reason
    assert second.id[:12] in disk.read_plan_reason
    assert disk.read_plan == "full"  # extents are relative to the damaged snapshot
    target = tmp_path / "restored.img"
    restore_disk(repo, third, None, target)
    assert target.read_bytes() == image


def test_without_an_undamaged_snapshot_the_backup_is_full(repo: Repository, tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(SIZE))
    first = _backup(repo, path)
    verification.record_results(repo, [first.id], {first.id: ["test damage"]}, "read-data")
    second = _backup(repo, path, [(0, 10)])
    assert second.parent is None
    assert second.backup_type == "Full"
    assert "parent failed verification" in second.disks[0].read_plan_reason


def test_damaged_chunks_are_not_reused_by_dedup(repo: Repository, tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    image = os.urandom(SIZE)
    path.write_bytes(image)
    _backup(repo, path)
    (pack,) = _pack_keys(repo)
    _flip_byte(repo, pack)
    assert not check_repository(repo, read_data=True, record=True).ok
    again = _backup(repo, path)
    target = tmp_path / "restored.img"
    restore_disk(repo, again, None, target)
    assert target.read_bytes() == image


def test_a_read_only_store_still_checks(repo: Repository, tmp_path: Path) -> None:
    from e3backup.storage.faulty import FaultyBackend

    _many_packs(repo, tmp_path, 1)
    read_only = Repository.open(FaultyBackend(repo.backend, fail_calls={"put": {1}}), "pw")
    report = check_repository(read_only, record=True)
    assert report.ok
    assert report.records_written == 0
    assert any("not recorded" in note for note in report.notes)
