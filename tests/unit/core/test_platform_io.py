"""platform_io against real files in tmp_path."""

from __future__ import annotations

import itertools
import os
import stat
import threading
from pathlib import Path

import pytest

from e3backup.core import platform_io

MiB = 1024 * 1024


def _sparse_file(path: Path, size: int, writes: dict[int, bytes]) -> None:
    with path.open("wb") as f:
        f.truncate(size)
        for offset, data in writes.items():
            f.seek(offset)
            f.write(data)
    if path.stat().st_blocks * 512 >= size:
        pytest.skip("filesystem under tmp_path does not keep holes")


def test_pread_reads_at_offset_from_fd_and_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * 4)
    with path.open("rb") as f:
        assert platform_io.pread(f, 4, 10) == bytes([10, 11, 12, 13])
        assert platform_io.pread(f.fileno(), 3, 300) == bytes([44, 45, 46])
        assert f.tell() == 0  # the shared position is untouched


def test_pread_is_short_only_at_end_of_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abcdef")
    with path.open("rb") as f:
        assert platform_io.pread(f, 10, 4) == b"ef"
        assert platform_io.pread(f, 10, 6) == b""
        assert platform_io.pread(f, 0, 0) == b""


def test_pread_from_many_threads_sees_the_right_bytes(tmp_path: Path) -> None:
    block = 4096
    path = tmp_path / "f"
    path.write_bytes(b"".join(bytes([i]) * block for i in range(64)))
    errors: list[int] = []
    fd = platform_io.open_readonly(path)
    try:

        def worker(start: int) -> None:
            for i in range(start, 64, 8):
                if platform_io.pread(fd, block, i * block) != bytes([i]) * block:
                    errors.append(i)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        os.close(fd)
    assert errors == []


def test_allocated_extents_cover_exactly_the_written_ranges(tmp_path: Path) -> None:
    size = 64 * MiB
    writes = {0: b"a" * 100, 10 * MiB + 123: b"b" * 5000, 40 * MiB: b"c" * MiB, size - 7: b"d" * 7}
    path = tmp_path / "sparse.img"
    _sparse_file(path, size, writes)
    with path.open("rb") as f:
        extents = list(platform_io.allocated_extents(f, size))
    for offset, data in writes.items():
        assert any(s <= offset and offset + len(data) <= s + n for s, n in extents), offset
    assert extents == sorted(extents)
    assert all(s + n <= t for (s, n), (t, _) in itertools.pairwise(extents))
    assert sum(n for _, n in extents) < 4 * MiB  # 64 MiB file, ~1 MiB written


def test_allocated_extents_of_a_dense_file_is_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "dense"
    path.write_bytes(os.urandom(3 * 4096 + 17))
    with path.open("rb") as f:
        assert list(platform_io.allocated_extents(f, 3 * 4096 + 17)) == [(0, 3 * 4096 + 17)]


def test_allocated_extents_of_empty_or_all_hole_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with empty.open("rb") as f:
        assert list(platform_io.allocated_extents(f, 0)) == []
    holes = tmp_path / "holes"
    _sparse_file(holes, 8 * MiB, {})
    with holes.open("rb") as f:
        assert list(platform_io.allocated_extents(f, 8 * MiB)) == []


def test_allocated_extents_are_clipped_to_size(tmp_path: Path) -> None:
    path = tmp_path / "dense"
    path.write_bytes(b"x" * 10000)
    with path.open("rb") as f:
        assert list(platform_io.allocated_extents(f, 5000)) == [(0, 5000)]


def test_without_seek_data_the_whole_file_is_one_extent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What Windows (no SEEK_DATA) gets: correct, just not sparse-aware.
    path = tmp_path / "sparse.img"
    _sparse_file(path, 8 * MiB, {MiB: b"x"})
    monkeypatch.delattr(os, "SEEK_DATA", raising=False)
    with path.open("rb") as f:
        assert list(platform_io.allocated_extents(f, 8 * MiB)) == [(0, 8 * MiB)]


def test_is_block_device(tmp_path: Path) -> None:
    regular = tmp_path / "f"
    regular.write_bytes(b"x")
    assert platform_io.is_block_device(regular) is False
    assert platform_io.is_block_device(tmp_path) is False
    assert platform_io.is_block_device(tmp_path / "missing") is False


@pytest.mark.skipif(os.name == "nt", reason="no POSIX block devices on Windows")
def test_is_block_device_recognises_a_real_device() -> None:
    dev = Path("/dev")
    devices = [p for p in dev.iterdir() if stat.S_ISBLK(p.lstat().st_mode)] if dev.is_dir() else []
    if not devices:
        pytest.skip("no block device in /dev")
    assert platform_io.is_block_device(devices[0]) is True
