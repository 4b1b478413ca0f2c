"""VhdxReader and VhdxWriter against real VHDX files made and checked by qemu-img / qemu-io.

qemu is the independent implementation here: it creates the images the reader must parse,
writes the data at scattered offsets, converts them to raw for the expected bytes, and checks
and compares what the writer produced. qemu cannot open differencing VHDX files, so chains are
checked against the same writes applied by qemu-io to a copy of the base image.
"""

from __future__ import annotations

import json
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from e3backup.sources.vhdx import VhdxReader, VhdxWriter, write_vhdx
from fixtures.real import require_tool as _tool
from fixtures.real import run_tool as _run

MiB = 1024 * 1024


def _qemu_create(path: Path, size: int, block_size: int, fixed: bool = False) -> Path:
    options = f"block_size={block_size}" + (",subformat=fixed" if fixed else "")
    _run(_tool("qemu-img"), "create", "-q", "-f", "vhdx", "-o", options, path, str(size))
    return path


def _qemu_write(path: Path, writes: list[tuple[int, int, int]]) -> None:
    """(offset, length, byte pattern) writes through qemu-io."""
    commands: list[str] = []
    for offset, length, pattern in writes:
        commands += ["-c", f"write -P {pattern:#x} {offset} {length}"]
    _run(_tool("qemu-io"), "-f", "vhdx", *commands, path)


def _to_raw(path: Path) -> bytes:
    raw = path.with_suffix(".raw")
    _run(_tool("qemu-img"), "convert", "-f", "vhdx", "-O", "raw", path, raw)
    data = raw.read_bytes()
    raw.unlink()
    return data


def _touched_blocks(
    size: int, block: int, writes: list[tuple[int, int, int]]
) -> list[tuple[int, int]]:
    blocks = sorted({b for o, n, _ in writes for b in range(o // block, (o + n - 1) // block + 1)})
    extents: list[tuple[int, int]] = []
    for b in blocks:
        start, end = b * block, min((b + 1) * block, size)
        if extents and extents[-1][0] + extents[-1][1] == start:
            extents[-1] = (extents[-1][0], end - extents[-1][0])
        else:
            extents.append((start, end - start))
    return extents


def _check_and_compare(image: Path, raw: bytes) -> None:
    assert "No errors were found" in _run(_tool("qemu-img"), "check", "-f", "vhdx", image)
    raw_path = image.with_suffix(".expected.raw")
    raw_path.write_bytes(raw)
    out = _run(_tool("qemu-img"), "compare", "-f", "raw", "-F", "vhdx", raw_path, image)
    assert "Images are identical" in out


def _scattered_writes(size: int, block: int, seed: int) -> list[tuple[int, int, int]]:
    rng = random.Random(seed)
    writes = [
        (0, 4096, 0xAB),
        (block - 512, 1024, 0xCD),  # crosses the first block boundary
        (size - 512, 512, 0xEF),  # the last sector, inside a short last block
    ]
    for _ in range(4):
        length = rng.choice([512, 4096, 65536, 3 * 512])
        offset = rng.randrange(0, (size - length) // 512) * 512
        writes.append((offset, length, rng.randrange(1, 256)))
    return writes


CASES = [
    # (subformat fixed?, block size, virtual size: never a multiple of the block size)
    (False, 1 * MiB, 10 * MiB + 64 * 1024),
    (False, 8 * MiB, 50 * MiB + 4096),
    (False, 32 * MiB, 100 * MiB + 512),
    (True, 1 * MiB, 6 * MiB + 512),
    (True, 8 * MiB, 20 * MiB + 64 * 1024),
]


@pytest.mark.parametrize(("fixed", "block", "size"), CASES)
def test_reader_matches_qemu_and_writer_passes_qemu_check(
    tmp_path: Path, fixed: bool, block: int, size: int
) -> None:
    source = _qemu_create(tmp_path / "src.vhdx", size, block, fixed)
    writes = _scattered_writes(size, block, seed=size)
    _qemu_write(source, writes)
    expected = _to_raw(source)
    assert len(expected) == size

    with VhdxReader.open(source) as disk:
        assert disk.size_bytes == size and disk.block_size == block
        assert disk.is_fixed == fixed
        assert disk.read(0, size) == expected
        extents = list(disk.allocated_extents())
        # qemu marks even a fixed disk's blocks ZERO until written (block_state_zero=on).
        assert extents == _touched_blocks(size, block, writes)
        before = disk.bytes_read
        pieces = [(o, disk.read(o, n)) for o, n in extents]
        allocated = sum(n for _, n in extents)
        assert disk.bytes_read - before == allocated  # data only, nothing outside the extents

    out = tmp_path / "out.vhdx"
    write_vhdx(out, size, pieces, block_size=block)
    _check_and_compare(out, expected)
    info = json.loads(_run(_tool("qemu-img"), "info", "--output=json", out))
    assert info["virtual-size"] == size and info["cluster-size"] == block
    with VhdxReader.open(out) as copy:
        assert sum(n for _, n in copy.allocated_extents()) <= allocated


def test_preallocated_fixed_disk_is_all_data(tmp_path: Path) -> None:
    size = 5 * MiB + 512
    source = tmp_path / "fixed.vhdx"
    options = "subformat=fixed,block_state_zero=off,block_size=1M"
    _run(_tool("qemu-img"), "create", "-q", "-f", "vhdx", "-o", options, source, str(size))
    _qemu_write(source, [(MiB + 512, 512, 0x42)])
    with VhdxReader.open(source) as disk:
        assert disk.is_fixed
        assert list(disk.allocated_extents()) == [(0, size)]
        assert disk.read(0, size) == _to_raw(source)


def test_open_reads_little_beyond_the_data(tmp_path: Path) -> None:
    size = 4096 * MiB  # a 4 GiB sparse disk with 3 small writes
    source = _qemu_create(tmp_path / "big.vhdx", size, 32 * MiB)
    _qemu_write(source, [(0, 4096, 1), (2000 * MiB, 65536, 2), (size - 4096, 4096, 3)])
    with VhdxReader.open(source) as disk:
        metadata_bytes = disk.bytes_read
        assert metadata_bytes < 512 * 1024  # headers, region tables, metadata table, BAT
        total = sum(len(disk.read(o, n)) for o, n in disk.allocated_extents())
        assert total == 3 * 32 * MiB
        assert disk.bytes_read == metadata_bytes + total


def test_parallel_out_of_order_writes_pass_qemu_check(tmp_path: Path) -> None:
    size, piece = 200 * MiB + 512, 4 * MiB
    rng = random.Random(3)
    writes = {o: rng.randbytes(piece) for o in range(0, size - piece, piece) if rng.random() < 0.25}
    writes[size - 512] = b"\x5a" * 512
    expected = bytearray(size)
    for offset, data in writes.items():
        expected[offset : offset + len(data)] = data
    items = list(writes.items())
    rng.shuffle(items)
    out = tmp_path / "out.vhdx"
    with VhdxWriter(out, size) as writer, ThreadPoolExecutor(8) as pool:  # 32 MiB blocks
        list(pool.map(lambda item: writer.write(*item), items))
    _check_and_compare(out, bytes(expected))


def test_differencing_chain_reads_as_qemu_flattened_image(tmp_path: Path) -> None:
    """Base by qemu-img; children by VhdxWriter; expected = the same writes by qemu-io."""
    size = 40 * MiB + 4096
    base = _qemu_create(tmp_path / "base.vhdx", size, 8 * MiB)
    _qemu_write(base, [(0, 3 * MiB, 0x11), (16 * MiB, 8 * MiB, 0x22), (size - 4096, 4096, 0x33)])
    layers = [
        [
            (512, 1024, 0x44),
            (MiB, 2 * MiB, 0x55),
            (17 * MiB + 4096, 512, 0x00),
            (30 * MiB, 4096, 0x66),
        ],
        [(1024, 512, 0x77), (20 * MiB, 2 * MiB, 0x88), (size - 512, 512, 0x99)],
    ]
    flat = tmp_path / "flat.vhdx"
    shutil.copy(base, flat)
    parent = base
    for depth, layer in enumerate(layers):
        child = tmp_path / f"child{depth}.avhdx"
        with VhdxWriter.create_child(child, parent) as writer:
            for offset, length, pattern in layer:
                writer.write(offset, bytes([pattern]) * length)
        _qemu_write(flat, layer)
        parent = child
    expected = _to_raw(flat)
    with VhdxReader.open(parent) as disk:
        assert disk.chain == [parent, tmp_path / "child0.avhdx", base]
        assert disk.read(0, size) == expected
        pieces = [(o, disk.read(o, n)) for o, n in disk.allocated_extents()]
    # The flattened chain, rewritten as a plain VHDX, is what qemu calls identical.
    out = tmp_path / "out.vhdx"
    write_vhdx(out, size, pieces, block_size=MiB)
    _check_and_compare(out, expected)
