"""VhdxWriter output read back by VhdxReader (pure Python, no qemu)."""

from __future__ import annotations

import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from vhdx_helpers import MiB, expected_image, get_bat_entry, make_vhdx

from e3backup.core.errors import ImageFormatError, SourceError, UsageError
from e3backup.sources.vhdx import VhdxReader, VhdxWriter, looks_like_vhdx
from e3backup.sources.vhdx import formats as f

WRITES = {
    0: b"\x01" * 4096,
    3 * MiB - 100: b"\x02" * 300,  # crosses a block boundary
    7 * MiB + 512: os.urandom(70_000),
}


@pytest.mark.parametrize("sector", [512, 4096])
@pytest.mark.parametrize("size", [10 * MiB, 10 * MiB + 4096, 3 * MiB + 8192])
def test_round_trip_reads_written_bytes(tmp_path: Path, size: int, sector: int) -> None:
    writes = {o: d for o, d in WRITES.items() if o + len(d) <= size}
    path = make_vhdx(tmp_path / "d.vhdx", size, writes, block_size=MiB, logical_sector=sector)
    assert looks_like_vhdx(path.read_bytes()[:8])
    with VhdxReader.open(path) as disk:
        assert disk.size_bytes == size
        assert disk.logical_sector_size == sector and disk.block_size == MiB
        assert not disk.is_fixed and disk.chain == [path]
        assert disk.read(0, size) == expected_image(size, writes)


def test_allocated_extents_are_the_written_blocks_and_reads_skip_the_rest(tmp_path: Path) -> None:
    size = 64 * MiB + 4096
    writes = {5 * MiB: b"a" * 10, 6 * MiB + 5: b"b", 20 * MiB - 1: b"cc", 64 * MiB: b"d" * 4096}
    path = make_vhdx(tmp_path / "d.vhdx", size, writes, block_size=MiB)
    with VhdxReader.open(path) as disk:
        extents = list(disk.allocated_extents())
        assert extents == [(5 * MiB, 2 * MiB), (19 * MiB, 2 * MiB), (64 * MiB, 4096)]
        before = disk.bytes_read
        image = expected_image(size, writes)
        for offset, length in extents:
            assert disk.read(offset, length) == image[offset : offset + length]
        assert disk.bytes_read - before == sum(n for _, n in extents)
        before = disk.bytes_read
        assert disk.read(30 * MiB, 10 * MiB) == bytes(10 * MiB)
        assert disk.bytes_read == before  # unallocated blocks cost no reads


def test_zero_writes_allocate_nothing(tmp_path: Path) -> None:
    path = tmp_path / "d.vhdx"
    with VhdxWriter(path, 8 * MiB, block_size=MiB) as writer:
        writer.write(0, bytes(8 * MiB))
    assert path.stat().st_size == 4 * MiB  # header area, log, metadata, BAT: no payload
    with VhdxReader.open(path) as disk:
        assert list(disk.allocated_extents()) == []
        assert disk.read(0, 8 * MiB) == bytes(8 * MiB)


def test_zeros_over_earlier_data_in_an_allocated_block_are_written(tmp_path: Path) -> None:
    path = tmp_path / "d.vhdx"
    with VhdxWriter(path, 2 * MiB, block_size=MiB) as writer:
        writer.write(0, b"x" * 8192)
        writer.write(4096, bytes(4096))
    with VhdxReader.open(path) as disk:
        assert disk.read(0, 8192) == b"x" * 4096 + bytes(4096)


def test_parallel_out_of_order_writes(tmp_path: Path) -> None:
    size, piece = 48 * MiB, 256 * 1024
    rng = random.Random(7)
    writes = {o: rng.randbytes(piece) for o in range(0, size, piece) if rng.random() < 0.3}
    order = list(writes.items())
    rng.shuffle(order)
    path = tmp_path / "d.vhdx"
    with VhdxWriter(path, size, block_size=4 * MiB) as writer, ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: writer.write(*item), order))
    with VhdxReader.open(path) as disk:
        assert disk.read(0, size) == expected_image(size, writes)
        for block in range(size // (4 * MiB)):
            entry = get_bat_entry(path, block)
            assert entry & 7 in (f.PAYLOAD_NOT_PRESENT, f.PAYLOAD_FULLY_PRESENT)
            assert entry & 0xFFFF8 == 0  # reserved bits clear


def test_reader_is_thread_safe_and_counts_every_read(tmp_path: Path) -> None:
    size = 16 * MiB
    writes = {o: os.urandom(MiB) for o in range(0, size, 2 * MiB)}
    path = make_vhdx(tmp_path / "d.vhdx", size, writes, block_size=MiB)
    image = expected_image(size, writes)
    with VhdxReader.open(path) as disk:
        start = disk.bytes_read
        errors: list[AssertionError] = []

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(50):
                offset = rng.randrange(size - 5000)
                try:
                    assert disk.read(offset, 5000) == image[offset : offset + 5000]
                except AssertionError as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert disk.bytes_read > start


def test_read_outside_the_disk_and_after_close(tmp_path: Path) -> None:
    path = make_vhdx(tmp_path / "d.vhdx", 4 * MiB, {0: b"x"}, block_size=MiB)
    disk = VhdxReader.open(path)
    with pytest.raises(SourceError, match="outside the disk"):
        disk.read(4 * MiB - 1, 2)
    with pytest.raises(SourceError):
        disk.read(-1, 1)
    disk.close()
    disk.close()
    with pytest.raises(SourceError, match="closed"):
        disk.read(0, 1)


def test_unfinished_writer_output_is_not_a_vhdx(tmp_path: Path) -> None:
    path = tmp_path / "d.vhdx"
    writer = VhdxWriter(path, 4 * MiB, block_size=MiB)
    writer.write(0, b"x" * 4096)
    writer.abort()
    with pytest.raises(ImageFormatError):
        VhdxReader.open(path).close()


@pytest.mark.parametrize(
    ("size", "options"),
    [
        (1000, {}),
        (0, {}),
        (MiB, {"block_size": 3 * MiB}),
        (MiB, {"block_size": 512 * 1024}),
        (MiB, {"logical_sector": 1024}),
    ],
)
def test_writer_rejects_impossible_disks(
    tmp_path: Path, size: int, options: dict[str, int]
) -> None:
    with pytest.raises(UsageError):
        VhdxWriter(tmp_path / "d.vhdx", size, **options)


def test_writer_refuses_existing_files_and_writes_outside(tmp_path: Path) -> None:
    path = tmp_path / "d.vhdx"
    path.write_bytes(b"keep")
    with pytest.raises(UsageError, match="exists"):
        VhdxWriter(path, MiB)
    assert path.read_bytes() == b"keep"
    writer = VhdxWriter(tmp_path / "e.vhdx", MiB)
    with pytest.raises(UsageError, match="outside"):
        writer.write(MiB - 1, b"ab")
    writer.abort()


def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        VhdxReader.open(tmp_path / "nope.vhdx")
