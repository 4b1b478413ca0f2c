"""A source that changes while it is backed up (issue 8 item 8): a shrink is never saved, a growth
or a write is saved with a warning. The file is changed for real, from inside the reader's own
reads (one worker, so the order of reads is the disk's), never by sleeping."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from e3backup.core.errors import SourceError
from e3backup.engines.image_backup import ImageBackupOptions, backup_image, restore_disk
from e3backup.repo.manifest import Snapshot
from e3backup.repo.repository import Repository
from e3backup.sources.detect import open_disk
from e3backup.sources.image import RawImageReader
from e3backup.storage.memory import MemoryBackend
from fixtures.real import require_tool, run_tool

KiB = 1024
CHUNK = 64 * KiB
SIZE = 16 * CHUNK


class _ChangedWhileRead(RawImageReader):
    """A real reader of a real file; `changes[n]` runs on the file once read number n is done."""

    changes: dict[int, Callable[[Path], None]]
    reads = 0

    def read(self, offset: int, length: int) -> bytes:
        data = super().read(offset, length)
        self.reads += 1
        change = self.changes.get(self.reads)
        if change is not None:
            change(self.path)
        return data


def _resize(size: int) -> Callable[[Path], None]:
    return lambda path: os.truncate(path, size)


def _overwrite(offset: int, data: bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(data)

    return write


@pytest.fixture
def repo() -> Repository:
    return Repository.init(MemoryBackend(), "pw", chunk_size=CHUNK)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(random.Random(1).randbytes(SIZE))
    return path


def _backup(repo: Repository, image: Path, changes: dict[int, Callable[[Path], None]]) -> Snapshot:
    with _ChangedWhileRead.open(image) as reader:
        reader.changes = changes
        return backup_image(repo, image, reader, ImageBackupOptions(workers=1))


def _restored(repo: Repository, snapshot: Snapshot, tmp_path: Path) -> bytes:
    target = tmp_path / "restored.img"
    restore_disk(repo, snapshot, None, target)
    return target.read_bytes()


def test_an_unchanged_source_has_no_warnings(repo: Repository, image: Path) -> None:
    snapshot = _backup(repo, image, {})
    assert snapshot.extra == {}


@pytest.mark.parametrize(
    "changes",
    [
        {1: _resize(4 * CHUNK)},  # truncated after the first chunk was read
        {1: _resize(4 * CHUNK), 8: _resize(SIZE)},  # and back to its size: chunks 4-7 read as 0
    ],
    ids=["shrunk", "shrunk-and-regrown"],
)
def test_a_source_that_shrinks_is_not_saved(
    repo: Repository, image: Path, changes: dict[int, Callable[[Path], None]]
) -> None:
    with pytest.raises(SourceError, match=r"shrank from 1048576 to 262144 bytes while it was read"):
        _backup(repo, image, changes)
    assert repo.list_snapshots() == []


def test_a_source_that_grows_is_saved_at_its_opening_size_with_a_warning(
    repo: Repository, image: Path, tmp_path: Path
) -> None:
    before = image.read_bytes()
    snapshot = _backup(repo, image, {1: _resize(SIZE + 100 * KiB)})
    assert snapshot.disks[0].size_bytes == SIZE
    assert snapshot.extra["warnings"] == [
        f"{image} grew from {SIZE} to {SIZE + 100 * KiB} bytes while it was read; "
        f"the snapshot holds its first {SIZE} bytes"
    ]
    assert _restored(repo, snapshot, tmp_path) == before
    assert repo.find_snapshot("latest").extra == snapshot.extra  # stored with the snapshot


def test_a_source_written_to_while_read_is_saved_with_a_warning(
    repo: Repository, image: Path
) -> None:
    snapshot = _backup(repo, image, {1: _overwrite(SIZE - 10, b"new tail!!")})
    [warning] = snapshot.extra["warnings"]
    assert "was written to while it was read" in warning


@pytest.mark.parametrize("fmt", ["qcow2", "vhdx"])
def test_an_image_file_written_to_while_read_is_saved_with_a_warning(
    repo: Repository, tmp_path: Path, fmt: str
) -> None:
    """Container formats: any change of the file means something wrote to the disk."""
    image = tmp_path / f"disk.{fmt}"
    run_tool(require_tool("qemu-img"), "create", "-q", "-f", fmt, image, "4M")
    run_tool(require_tool("qemu-io"), "-f", fmt, "-c", "write -P 0x61 0 1M", image)
    with open_disk(image) as reader:
        assert reader.changes_since_open() == []
        os.utime(image, ns=(0, 0))  # what a write does to it, without racing qemu's locks
        snapshot = backup_image(repo, image, reader)
    [warning] = snapshot.extra["warnings"]
    assert f"{image} was written to while it was read" in warning
