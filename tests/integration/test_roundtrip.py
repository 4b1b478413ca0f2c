"""Back up and restore real image files through the CLI: byte-identical, sparse, incremental."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from cli_harness import (
    Cli,
    KiB,
    MiB,
    allocated_bytes,
    assert_one_line_error,
    chunks_touched,
    patch,
    sha256,
    write_random,
    write_sparse,
)

REPO_CONFIGS = {
    "default": [],
    "64K-unencrypted": ["--chunk-size", "64K", "--encryption", "none"],
}

# An image builder writes the file and returns the (offset, length) ranges that hold non-zero
# data, or None when the image is dense random data (no sparseness to expect after restore).
ImageBuilder = Callable[[Path], list[tuple[int, int]] | None]


def _random(path: Path) -> None:
    write_random(path, 5 * MiB, seed=1)


def _odd_sized(path: Path) -> None:
    write_random(path, 3 * MiB + 12345, seed=2)


def _sparse(path: Path) -> list[tuple[int, int]]:
    rng = random.Random(3)
    size = 64 * MiB
    writes = []
    for _ in range(10):
        length = rng.randrange(1, 100 * KiB)
        offset = rng.randrange(0, size - length)
        writes.append((offset, rng.randbytes(length)))
    writes.append((size - 7, b"the end"))  # data in the very last chunk
    write_sparse(path, size, writes)
    return [(offset, len(data)) for offset, data in writes]


def _zero_sparse(path: Path) -> list[tuple[int, int]]:
    write_sparse(path, 32 * MiB + 4096, [])
    return []


def _zero_dense(path: Path) -> list[tuple[int, int]]:
    with open(path, "wb") as f:
        for _ in range(8):
            f.write(bytes(MiB))
        f.flush()
        os.fsync(f.fileno())
    assert allocated_bytes(path) >= 8 * MiB, "the source must really hold written zeros"
    return []


def _empty(path: Path) -> None:
    path.write_bytes(b"")


IMAGES: dict[str, Callable[[Path], list[tuple[int, int]] | None]] = {
    "random": _random,
    "odd-sized": _odd_sized,
    "sparse": _sparse,
    "all-zero-sparse": _zero_sparse,
    "all-zero-dense": _zero_dense,
    "empty": _empty,
}


def _chunk_size(cli: Cli) -> int:
    size: int = cli.ok("repo", "info", "--json").json()["chunk_size"]
    return size


@pytest.mark.parametrize("config", sorted(REPO_CONFIGS))
@pytest.mark.parametrize("kind", list(IMAGES))
def test_round_trip_is_byte_identical_and_sparse(
    cli: Cli, tmp_path: Path, kind: str, config: str
) -> None:
    cli.init(*REPO_CONFIGS[config])
    chunk_size = _chunk_size(cli)
    image = tmp_path / f"{kind}.img"
    nonzero = IMAGES[kind](image)
    size = image.stat().st_size

    snap = cli.backup(image)
    assert snap["type"] == "Full"
    [disk] = snap["disks"]
    assert disk["name"] == image.name
    assert disk["size_bytes"] == size

    restored = tmp_path / "restored.img"
    cli.ok("restore", snap["id"], "--to", restored)
    assert restored.stat().st_size == size
    assert sha256(restored) == sha256(image)

    if nonzero is not None:  # holes in, holes out; and holes are never read
        data_chunks = len(chunks_touched(nonzero, chunk_size))
        if allocated_bytes(image) < size / 4:
            assert disk["bytes_read"] <= data_chunks * chunk_size
        assert allocated_bytes(restored) <= data_chunks * chunk_size + 64 * KiB
        if size:
            assert allocated_bytes(restored) < size / 4
    assert cli.ok("repo", "check", "--read-data").returncode == 0


@pytest.mark.parametrize("config", sorted(REPO_CONFIGS))
def test_unchanged_image_uploads_nothing_new(cli: Cli, tmp_path: Path, config: str) -> None:
    cli.init(*REPO_CONFIGS[config])
    image = tmp_path / "disk.img"
    rng = random.Random(4)
    write_sparse(image, 48 * MiB, [(i * 5 * MiB + 333, rng.randbytes(700 * KiB)) for i in range(8)])
    first = cli.backup(image)
    assert first["disks"][0]["bytes_uploaded"] > 5 * MiB

    second = cli.backup(image)
    assert second["parent"] == first["id"]
    assert second["disks"][0]["bytes_uploaded"] < 64 * KiB  # at most index pages
    assert second["disks"][0]["bytes_changed"] == 0

    restored = tmp_path / "restored.img"
    cli.ok("restore", second["id"], "--to", restored)
    assert sha256(restored) == sha256(image)


def test_changed_extents_reads_only_those_chunks(cli: Cli, tmp_path: Path) -> None:
    cli.init("--chunk-size", "64K")
    chunk_size = 64 * KiB
    image = tmp_path / "vm.img"
    write_random(image, 8 * MiB, seed=5)
    first_sha = sha256(image)
    first = cli.backup(image)

    rng = random.Random(6)
    changes = [(100 * KiB, 10), (3 * MiB - 5, 10), (7 * MiB + 1, 4096)]  # one spans two chunks
    for offset, length in changes:
        patch(image, offset, rng.randbytes(length))
    extents = tmp_path / "changed.json"
    extents.write_text(json.dumps([list(c) for c in changes]))

    second = cli.backup(image, "--changed-extents", extents)
    assert second["type"] == "Incremental"
    assert second["parent"] == first["id"]
    [disk] = second["disks"]
    assert disk["read_plan"] == "incremental"
    touched = chunks_touched(changes, chunk_size)
    assert len(touched) == 4
    assert disk["bytes_read"] == len(touched) * chunk_size
    assert disk["bytes_changed"] == len(touched) * chunk_size

    restored_new = tmp_path / "new.img"
    cli.ok("restore", "latest", "--to", restored_new)
    assert sha256(restored_new) == sha256(image)
    restored_old = tmp_path / "old.img"
    cli.ok("restore", first["id"], "--to", restored_old)
    assert sha256(restored_old) == first_sha != sha256(image)


def test_a_lying_changed_extents_file_is_caught_and_the_disk_read_in_full(
    cli: Cli, tmp_path: Path
) -> None:
    """8 chunks, the list names chunk 0 but chunk 5 changed too: the sample (8 chunks) re-reads
    every "unchanged" chunk, so the lie is caught whatever the random choice."""
    cli.init("--chunk-size", "64K")
    image = tmp_path / "vm.img"
    write_random(image, 8 * 64 * KiB, seed=9)
    cli.backup(image)
    patch(image, 10, b"listed")
    patch(image, 5 * 64 * KiB + 100, b"not in the list")
    extents = tmp_path / "changed.json"
    extents.write_text("[[10, 6]]")

    result = cli.ok("backup", "image", image, "--changed-extents", extents, "--json")
    second = result.json()
    [disk] = second["disks"]
    assert (second["type"], disk["read_plan"]) == ("Full", "full")
    assert "sampled verification: chunk 5 differs" in disk["read_plan_reason"]
    assert second["warnings"] == [f"disk vm.img: {disk['read_plan_reason']}"]
    assert "sampled verification" in result.stderr
    restored = tmp_path / "restored.img"
    cli.ok("restore", second["id"], "--to", restored)
    assert sha256(restored) == sha256(image)


def test_changed_extents_without_parent_reads_everything(cli: Cli, tmp_path: Path) -> None:
    cli.init("--chunk-size", "64K")
    image = tmp_path / "vm.img"
    write_random(image, 2 * MiB, seed=7)
    extents = tmp_path / "changed.json"
    extents.write_text("[[0, 10]]")
    snap = cli.backup(image, "--changed-extents", extents)
    assert snap["type"] == "Full"
    assert snap["disks"][0]["bytes_read"] == 2 * MiB
    assert "parent" in snap["disks"][0]["read_plan_reason"]
    restored = tmp_path / "restored.img"
    cli.ok("restore", "latest", "--to", restored)
    assert sha256(restored) == sha256(image)


def test_restore_never_replaces_an_existing_file_unless_asked(cli: Cli, tmp_path: Path) -> None:
    cli.init()
    image = tmp_path / "disk.img"
    write_random(image, 1 * MiB + 3, seed=8)
    cli.backup(image)

    target = tmp_path / "existing.img"
    target.write_bytes(b"precious data")
    os.utime(target, (1_000_000, 1_000_000))
    before = target.stat()
    result = cli.restore("latest", target)
    assert_one_line_error(result, "exists", "--overwrite")
    after = target.stat()
    assert target.read_bytes() == b"precious data"
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [p.name for p in tmp_path.iterdir() if "e3partial" in p.name] == []

    cli.ok("restore", "latest", "--to", target, "--overwrite")
    assert sha256(target) == sha256(image)


def test_snapshots_json_lists_every_snapshot(cli: Cli, tmp_path: Path) -> None:
    cli.init()
    assert cli.snapshots() == []
    first_image, second_image = tmp_path / "a.img", tmp_path / "b.raw"
    write_random(first_image, 300 * KiB, seed=9)
    write_sparse(second_image, 10 * MiB + 1, [(5 * MiB, b"x" * 100)])
    made = [cli.backup(first_image), cli.backup(second_image), cli.backup(first_image)]

    listed = cli.snapshots()
    assert [s["id"] for s in listed] == [s["id"] for s in made]  # oldest first
    expected_disks = [("a.img", 300 * KiB), ("b.raw", 10 * MiB + 1), ("a.img", 300 * KiB)]
    for snap, image, (disk_name, size) in zip(
        listed, [first_image, second_image, first_image], expected_disks, strict=True
    ):
        assert len(snap["id"]) >= 12
        assert datetime.fromisoformat(snap["time"]).tzinfo is not None
        assert snap["source"]["type"] == "image"
        assert snap["source"]["name"] == str(image.resolve())
        assert snap["type"] in ("Full", "Incremental")
        assert [(d["name"], d["size_bytes"]) for d in snap["disks"]] == [(disk_name, size)]
    assert listed[0]["source"]["id"] == listed[2]["source"]["id"] != listed[1]["source"]["id"]
    assert listed[2]["parent"] == listed[0]["id"]
    assert listed[1]["parent"] is None
