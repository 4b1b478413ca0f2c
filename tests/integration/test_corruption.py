"""Damaged packs: `check` names exactly the affected snapshots, restore never returns wrong data.

Three snapshots of one 2 MiB image (64 KiB chunks), built so each backup writes exactly one pack
with one kind of new data:

    snapshot 1: S (chunks 0-15, random) + holes   → pack 1 = S's 16 chunks + page 1
    snapshot 2: S + U2 (chunks 16-31, random)     → pack 2 = U2's 16 chunks + page 2
    snapshot 3: S + U3                            → pack 3 = U3's 16 chunks + page 3

So a damaged data chunk of pack 1 hurts every snapshot, one of pack 2 only snapshot 2, and a
damaged page only the snapshot it indexes. Blob positions come from the pack's own trailer,
read with the library; each case damages a fresh copy of the repository.
"""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_harness import PASSWORD, Cli, KiB, patch, sha256, write_sparse

from e3backup.repo import formats
from e3backup.repo.pack import PackEntry, read_trailer
from e3backup.repo.repository import Repository
from e3backup.storage.local import LocalBackend

CHUNK = 64 * KiB
INTEGRITY_WORDS = re.compile(r"integrity|authentication|corrupt|damaged|truncated|missing", re.I)


@dataclass(frozen=True)
class Built:
    repo: Path
    snapshot_ids: list[str]  # oldest first
    shas: dict[str, str]  # snapshot id → sha256 of the image when it was taken
    packs: list[Path]  # pack k (0-based) written by snapshot k, relative to the repo
    entries: list[list[PackEntry]]  # each pack's trailer, sorted by offset


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("corruption")
    cli = Cli(root / "repo")
    cli.init("--chunk-size", "64K")
    image = root / "vm.img"
    shared = _random(100, 16 * CHUNK)
    ids, shas, packs = [], {}, []
    for k, unique in enumerate([None, _random(102, 16 * CHUNK), _random(103, 16 * CHUNK)]):
        write_sparse(image, 32 * CHUNK, [(0, shared)])
        if unique is not None:
            patch(image, 16 * CHUNK, unique)
        before = set(_pack_files(cli.repo))
        snap = cli.backup(image)
        [new_pack] = set(_pack_files(cli.repo)) - before
        ids.append(snap["id"])
        shas[snap["id"]] = sha256(image)
        packs.append(new_pack.relative_to(cli.repo))
        assert snap["disks"][0]["bytes_changed"] == 16 * CHUNK, f"snapshot {k + 1}"

    repo = Repository.open(LocalBackend(cli.repo), PASSWORD)
    entries = []
    for pack in packs:
        pack_entries = sorted(
            read_trailer((cli.repo / pack).read_bytes(), repo.codec), key=lambda e: e.offset
        )
        kinds = [e.blob_type for e in pack_entries]
        assert kinds.count(formats.BLOB_DATA) == 16 and kinds.count(formats.BLOB_PAGE) == 1
        entries.append(pack_entries)
    assert cli.ok("repo", "check", "--read-data").returncode == 0
    return Built(cli.repo, ids, shas, packs, entries)


def _random(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _pack_files(repo: Path) -> list[Path]:
    return [p for p in (repo / "packs").rglob("*") if p.is_file()]


def _damaged_copy(built: Built, tmp_path: Path) -> Cli:
    copy = tmp_path / "repo"
    shutil.copytree(built.repo, copy)
    return Cli(copy)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# Where to flip a byte: (name, pack number 1-3, position in the pack) and which snapshots
# (numbers) are damaged. The position function gets the pack's sorted trailer entries and size.
def _first_blob(entries: list[PackEntry], _size: int) -> int:
    first = entries[0]
    assert first.offset == 0 and first.blob_type == formats.BLOB_DATA
    return first.length // 3


def _data_middle(entries: list[PackEntry], _size: int) -> int:
    data = [e for e in entries if e.blob_type == formats.BLOB_DATA]
    return (data[0].offset + data[-1].offset + data[-1].length) // 2


def _last_data_byte(entries: list[PackEntry], _size: int) -> int:
    last = [e for e in entries if e.blob_type == formats.BLOB_DATA][-1]
    return last.offset + last.length - 1  # inside the authentication tag


def _blob_header(entries: list[PackEntry], _size: int) -> int:
    return [e for e in entries if e.blob_type == formats.BLOB_DATA][5].offset  # the magic


def _blob_flags(entries: list[PackEntry], _size: int) -> int:
    return [e for e in entries if e.blob_type == formats.BLOB_DATA][7].offset + 3


def _page_blob(entries: list[PackEntry], _size: int) -> int:
    [page] = [e for e in entries if e.blob_type == formats.BLOB_PAGE]
    return page.offset + page.length // 2


def _trailer(entries: list[PackEntry], size: int) -> int:
    end_of_blobs = max(e.offset + e.length for e in entries)
    return (end_of_blobs + size - formats.PACK_FOOTER.size) // 2


def _footer_length(_entries: list[PackEntry], size: int) -> int:
    return size - formats.PACK_FOOTER.size


def _footer_magic(_entries: list[PackEntry], size: int) -> int:
    return size - 1


FLIPS = [
    ("first-blob", 2, _first_blob, {2}),
    ("first-blob-shared", 1, _first_blob, {1, 2, 3}),
    ("data-middle", 1, _data_middle, {1, 2, 3}),
    ("data-middle", 3, _data_middle, {3}),
    ("data-tag", 3, _last_data_byte, {3}),
    ("blob-magic", 2, _blob_header, {2}),
    ("blob-flags", 1, _blob_flags, {1, 2, 3}),
    ("page", 1, _page_blob, {1}),
    ("page", 2, _page_blob, {2}),
    ("trailer", 2, _trailer, set()),
    ("footer-length", 1, _footer_length, set()),
    ("footer-magic", 3, _footer_magic, set()),
]


@pytest.mark.parametrize(
    ("where", "pack_no", "position", "damaged"),
    FLIPS,
    ids=[f"{name}-pack{pack}" for name, pack, _, _ in FLIPS],
)
def test_one_flipped_byte(
    built: Built,
    tmp_path: Path,
    where: str,
    pack_no: int,
    position: Callable[[list[PackEntry], int], int],
    damaged: set[int],
) -> None:
    cli = _damaged_copy(built, tmp_path)
    pack = cli.repo / built.packs[pack_no - 1]
    offset = position(built.entries[pack_no - 1], pack.stat().st_size)
    _flip(pack, offset)

    result = cli.run("repo", "check", "--read-data", "--json")
    assert result.returncode == 13, result.describe()
    report = result.json()
    assert not report["ok"] and report["errors"], result.describe()
    expected = sorted(built.snapshot_ids[n - 1] for n in damaged)
    assert report["damaged_snapshots"] == expected, f"flip at {where} ({offset})"
    _assert_restores(cli, built, tmp_path, expected)


@pytest.mark.parametrize(("pack_no", "damaged"), [(2, {2}), (1, {1, 2, 3})])
def test_truncated_pack_fails_the_structure_check(
    built: Built, tmp_path: Path, pack_no: int, damaged: set[int]
) -> None:
    cli = _damaged_copy(built, tmp_path)
    pack = cli.repo / built.packs[pack_no - 1]
    with open(pack, "r+b") as f:
        f.truncate(pack.stat().st_size // 2)

    result = cli.run("repo", "check", "--json")
    assert result.returncode == 13, result.describe()
    expected = sorted(built.snapshot_ids[n - 1] for n in damaged)
    assert result.json()["damaged_snapshots"] == expected
    assert "truncated" in " ".join(result.json()["errors"])
    _assert_restores(cli, built, tmp_path, expected)


@pytest.mark.parametrize("pack_no", [1, 2])
def test_restore_from_a_truncated_pack_is_an_integrity_error(
    built: Built, tmp_path: Path, pack_no: int
) -> None:
    """Before any check recorded the damage, restore itself finds the short pack: exit 13
    (integrity), not 20 (storage), naming the pack."""
    cli = _damaged_copy(built, tmp_path)
    pack = cli.repo / built.packs[pack_no - 1]
    with open(pack, "r+b") as f:
        f.truncate(pack.stat().st_size // 2)
    result = cli.restore(built.snapshot_ids[pack_no - 1], tmp_path / "restored.img")
    assert result.returncode == 13, result.describe()
    assert "truncated" in result.stderr and pack.name[:16] in result.stderr, result.describe()
    assert not (tmp_path / "restored.img").exists()


def test_pack_missing_its_last_byte_fails_the_data_check(built: Built, tmp_path: Path) -> None:
    cli = _damaged_copy(built, tmp_path)
    pack = cli.repo / built.packs[1]
    with open(pack, "r+b") as f:
        f.truncate(pack.stat().st_size - 1)
    result = cli.run("repo", "check", "--read-data", "--json")
    assert result.returncode == 13, result.describe()
    assert result.json()["damaged_snapshots"] == []  # every chunk is still intact
    _assert_restores(cli, built, tmp_path, [])


@pytest.mark.parametrize(("pack_no", "damaged"), [(3, {3}), (1, {1, 2, 3})])
def test_deleted_pack_names_the_snapshots(
    built: Built, tmp_path: Path, pack_no: int, damaged: set[int]
) -> None:
    cli = _damaged_copy(built, tmp_path)
    (cli.repo / built.packs[pack_no - 1]).unlink()

    result = cli.run("repo", "check")
    assert result.returncode == 13, result.describe()
    for n in damaged:
        assert built.snapshot_ids[n - 1][:12] in result.stderr, result.describe()
    report = cli.run("repo", "check", "--json").json()
    assert report["damaged_snapshots"] == sorted(built.snapshot_ids[n - 1] for n in damaged)
    assert "missing" in " ".join(report["errors"])
    _assert_restores(cli, built, tmp_path, report["damaged_snapshots"])


def _assert_restores(cli: Cli, built: Built, tmp_path: Path, damaged: list[str]) -> None:
    """Damaged snapshots fail with exit 13 (integrity error) naming the damaged pack and leave
    no file; the others restore exactly."""
    for number, snapshot_id in enumerate(built.snapshot_ids, 1):
        target = tmp_path / f"restored-{number}.img"
        result = cli.restore(snapshot_id, target)
        if snapshot_id in damaged:
            assert result.returncode == 13, result.describe()
            assert INTEGRITY_WORDS.search(result.stderr), result.describe()
            assert "Traceback" not in result.stderr, result.describe()
            named = [p.name[:16] for p in built.packs if p.name[:16] in result.stderr]
            assert named, result.describe()
            assert not target.exists()
        else:
            assert result.returncode == 0, result.describe()
            assert sha256(target) == built.shas[snapshot_id]
    assert [p.name for p in tmp_path.iterdir() if "e3partial" in p.name] == []
