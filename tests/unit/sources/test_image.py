"""RawImageReader against real files in tmp_path."""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

import pytest

from e3backup.core.errors import SourceError
from e3backup.sources.image import RawImageReader

MiB = 1024 * 1024


def _sparse_file(path: Path, size: int, writes: dict[int, bytes]) -> None:
    with path.open("wb") as f:
        f.truncate(size)
        for offset, data in writes.items():
            f.seek(offset)
            f.write(data)
    if path.stat().st_blocks * 512 >= size:
        pytest.skip("filesystem under tmp_path does not keep holes")


def test_sparse_image_reports_only_written_extents(tmp_path: Path) -> None:
    size = 256 * MiB
    writes = {4096: b"a" * 10, 100 * MiB + 1: b"b" * 70000, 200 * MiB: b"c" * MiB}
    path = tmp_path / "disk.img"
    _sparse_file(path, size, writes)
    with RawImageReader.open(path) as disk:
        assert disk.size_bytes == size
        extents = list(disk.allocated_extents())
        for offset, data in writes.items():
            assert any(s <= offset and offset + len(data) <= s + n for s, n in extents)
            assert disk.read(offset, len(data)) == data
        assert all(s + n < t for (s, n), (t, _) in itertools.pairwise(extents))
        assert sum(n for _, n in extents) < 4 * MiB
        assert disk.read(50 * MiB, 4096) == bytes(4096)  # holes read as zeros


def test_adjacent_writes_come_back_as_one_merged_extent(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    _sparse_file(path, 16 * MiB, {MiB: b"x" * 8192, MiB + 8192: b"y" * 8192})
    with RawImageReader.open(path) as disk:
        extents = list(disk.allocated_extents())
    assert len(extents) == 1
    assert extents[0][0] <= MiB and MiB + 16384 <= sum(extents[0])


def test_dense_image_with_odd_size(tmp_path: Path) -> None:
    size = 5 * 4096 + 123
    content = os.urandom(size)
    path = tmp_path / "disk.img"
    path.write_bytes(content)
    with RawImageReader.open(path) as disk:
        assert disk.size_bytes == size
        assert list(disk.allocated_extents()) == [(0, size)]
        assert disk.read(size - 200, 200) == content[-200:]
        assert disk.read(0, size) == content
        assert disk.bytes_read == 200 + size
        assert disk.read(size, 0) == b""


def test_empty_image(tmp_path: Path) -> None:
    path = tmp_path / "empty.img"
    path.write_bytes(b"")
    with RawImageReader.open(path) as disk:
        assert disk.size_bytes == 0
        assert list(disk.allocated_extents()) == []


@pytest.mark.parametrize(("offset", "length"), [(4000, 200), (4096, 1), (-1, 10), (0, -1)])
def test_read_outside_the_disk_raises(tmp_path: Path, offset: int, length: int) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(b"z" * 4096)
    with RawImageReader.open(path) as disk, pytest.raises(SourceError, match="outside the disk"):
        disk.read(offset, length)


def test_concurrent_reads_are_correct_and_counted(tmp_path: Path) -> None:
    block, count = 4096, 128
    path = tmp_path / "disk.img"
    path.write_bytes(b"".join(i.to_bytes(2, "big") * (block // 2) for i in range(count)))
    bad: list[int] = []
    with RawImageReader.open(path) as disk:

        def worker(first: int) -> None:
            for i in range(first, count, 8):
                if disk.read(i * block, block) != i.to_bytes(2, "big") * (block // 2):
                    bad.append(i)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert bad == []
        assert disk.bytes_read == block * count


def test_missing_path_raises_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.img"
    with pytest.raises(SourceError, match=r"nope\.img: no such file"):
        RawImageReader.open(missing)


def test_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is a directory"):
        RawImageReader.open(tmp_path)


@pytest.mark.skipif(
    os.name == "nt" or os.geteuid() == 0, reason="root (or Windows) ignores the mode bits"
)
def test_unreadable_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "secret.img"
    path.write_bytes(b"x")
    path.chmod(0)
    with pytest.raises(SourceError, match=r"secret\.img: permission denied"):
        RawImageReader.open(path)


def test_closed_reader_refuses_reads_and_close_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(b"x" * 10)
    disk = RawImageReader.open(path)
    disk.close()
    disk.close()
    with pytest.raises(SourceError, match="closed"):
        disk.read(0, 1)
