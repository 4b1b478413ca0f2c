"""Fuzz: mutated real VHDX files only ever raise SourceError (ImageFormatError), quickly and
without large allocations.

Samples come from qemu-img/qemu-io and from VhdxWriter (a plain disk, a differencing child and
a disk with a pending log). Mutations aim at the structures: bytes and little-endian integers
in the headers, region tables, metadata table and items, BAT, parent locator and log entries
(headers, descriptors, data sectors), optionally with the CRCs recomputed so damage gets past
the checksums into the field validation, and truncation.
"""

from __future__ import annotations

import functools
import struct
import subprocess
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vhdx_helpers import MiB

from e3backup.core.errors import SourceError
from e3backup.sources.vhdx import VhdxReader, VhdxWriter, write_vhdx
from e3backup.sources.vhdx import formats as f
from e3backup.sources.vhdx.crc32c import crc32c
from e3backup.sources.vhdx.log_writer import write_pending_log
from fixtures.real import require_tool

SIZE = 8 * MiB + 4096
WRITES = [(0, b"a" * 4096), (3 * MiB - 512, b"b" * 1024), (SIZE - 512, b"c" * 512)]
READ_BUDGET = 12 * MiB
MEMORY_CAP = 64 * MiB
INTERESTING = [0, 1, 2, 3, 4, 5, 6, 7, 0x80, 0xFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 20, 2047, 2048]
INTERESTING64 = [1 << 63, (1 << 64) - 1, 1 << 40, (5 << 20) | 6, (1 << 20) | 7, SIZE]


def _areas(image: bytes) -> list[tuple[int, int]]:
    """(offset, length) of the structures worth mutating in this file."""
    areas = [(o, 80) for o in f.HEADER_OFFSETS]  # the file id is covered by unit tests
    areas += [(o, 16 + 32 * 4) for o in f.REGION_TABLE_OFFSETS]
    entries = f.unpack_region_table(image[f.REGION_TABLE_OFFSETS[0] :][: f.REGION_TABLE_SIZE])
    assert entries is not None
    for entry in entries:
        if entry.guid == f.BAT_GUID:
            areas += [(entry.offset, 8 * 16)] * 3  # weighted: the BAT has the most cases
        else:
            areas += [(entry.offset, 32 + 32 * 8)] * 2
            areas += [(entry.offset + f.METADATA_TABLE_SIZE, 512)] * 2  # items, parent locator
    for start, length in _log_entries(image):
        count = struct.unpack_from("<I", image, start + 24)[0]
        areas += [(start, f.LOG_ENTRY_HEADER_SIZE + f.LOG_DESCRIPTOR_SIZE * count)] * 3
        data = start + f.log_descriptor_sectors(count) * f.LOG_SECTOR
        areas += [(o, 8) for o in range(data, start + length, f.LOG_SECTOR)]  # signature, high
        areas += [(o + f.LOG_SECTOR - 8, 8) for o in range(data, start + length, f.LOG_SECTOR)]
    return areas


def _log_entries(image: bytes) -> list[tuple[int, int]]:
    """(file offset, length) of the log entries of the sample (none wrap in the samples)."""
    header = f.unpack_header(image[f.HEADER_OFFSETS[1] :][: f.HEADER_SIZE])
    if header is None or header.log_guid.int == 0:
        return []
    log = range(header.log_offset, header.log_offset + header.log_length, f.LOG_SECTOR)
    return [
        (o, struct.unpack_from("<I", image, o + 8)[0])
        for o in log
        if image[o : o + 4] == f.LOG_ENTRY_SIGNATURE
    ]


def _fix_checksums(image: bytearray, log_entries: list[tuple[int, int]]) -> None:
    for offset, size in (
        [(o, f.HEADER_SIZE) for o in f.HEADER_OFFSETS]
        + [(o, f.REGION_TABLE_SIZE) for o in f.REGION_TABLE_OFFSETS]
        + log_entries
    ):
        body = bytearray(image[offset : offset + size])
        if len(body) == size:
            body[4:8] = bytes(4)
            image[offset + 4 : offset + 8] = struct.pack("<I", crc32c(body))


mutation = st.tuples(
    st.integers(0, 1000),  # which area (modulo)
    st.integers(0, 1 << 16),  # where in it (modulo)
    st.sampled_from(["byte", "u32", "u64"]),
    st.one_of(st.integers(0, 255), st.sampled_from(INTERESTING + INTERESTING64)),
)


def _mutate(
    sample: bytes, mutations: list[tuple[int, int, str, int]], fix: bool, cut: int | None
) -> bytes:
    image = bytearray(sample)
    areas = _areas(sample)
    for which, where, kind, value in mutations:
        start, length = areas[which % len(areas)]
        offset = start + where % length
        if kind == "byte":
            image[offset] = value & 0xFF
        elif kind == "u32":
            image[offset : offset + 4] = struct.pack("<I", value & 0xFFFFFFFF)
        else:
            image[offset : offset + 8] = struct.pack("<Q", value & ((1 << 64) - 1))
    if fix:
        _fix_checksums(image, _log_entries(sample))
    if cut is not None:
        del image[cut % len(image) :]
    return bytes(image)


def _exercise(path: Path) -> None:
    """Open and read like a backup would; only SourceError may come out."""
    try:
        with VhdxReader.open(path) as disk:
            budget = READ_BUDGET
            for offset, length in disk.allocated_extents():
                assert offset >= 0 and offset + length <= disk.size_bytes
                while length > 0 and budget > 0:
                    piece = min(length, MiB, budget)
                    assert len(disk.read(offset, piece)) == piece
                    offset, length, budget = offset + piece, length - piece, budget - piece
            assert len(disk.read(disk.size_bytes - 1, 1)) == 1
            assert len(disk.read(0, min(disk.size_bytes, 65536))) == min(disk.size_bytes, 65536)
    except SourceError:
        pass


def _fuzz(path: Path, sample: bytes, data: st.DataObject) -> None:
    mutations = data.draw(st.lists(mutation, min_size=1, max_size=6), label="mutations")
    fix = data.draw(st.booleans(), label="fix checksums")
    truncate = data.draw(st.integers(0, 9), label="truncate?") == 0
    cut = data.draw(st.integers(0, len(sample)), label="truncate at") if truncate else None
    path.write_bytes(_mutate(sample, mutations, fix, cut))
    tracemalloc.reset_peak()
    _exercise(path)
    peak = tracemalloc.get_traced_memory()[1]
    assert peak < MEMORY_CAP, f"reader allocated {peak} bytes"


@functools.cache
def _writer_sample(directory: Path) -> bytes:
    path = directory / "writer.vhdx"
    write_vhdx(path, SIZE, WRITES, block_size=MiB)
    return path.read_bytes()


@functools.cache
def _child_sample(directory: Path) -> bytes:
    parent = directory / "parent.vhdx"
    write_vhdx(parent, SIZE, WRITES, block_size=MiB)
    child = directory / "child-sample.avhdx"
    with VhdxWriter.create_child(child, parent, block_size=MiB) as writer:
        writer.write(512, b"x" * 1024)
        writer.write(2 * MiB, b"y" * MiB)
    return child.read_bytes()


@functools.cache
def _qemu_sample(directory: Path) -> bytes:
    path = directory / "qemu.vhdx"
    qemu_img, qemu_io = require_tool("qemu-img"), require_tool("qemu-io")
    subprocess.run(
        [qemu_img, "create", "-q", "-f", "vhdx", "-o", "block_size=1M", str(path), str(SIZE)],
        check=True,
        timeout=60,
    )
    commands = [a for o, d in WRITES for a in ("-c", f"write -P 0x5a {o} {len(d)}")]
    subprocess.run([qemu_io, "-f", "vhdx", *commands, str(path)], check=True, timeout=60)
    return path.read_bytes()


@functools.cache
def _log_sample(directory: Path) -> bytes:
    """A disk whose log holds a new block's BAT entry and data, zeros and a rewritten sector."""
    path = directory / "log-sample.vhdx"
    write_vhdx(path, SIZE, WRITES, block_size=MiB)
    end = path.stat().st_size
    with path.open("r+b") as fh:
        fh.truncate(end + MiB)
        fh.seek(3 * MiB)
        bat = bytearray(fh.read(4096))
    struct.pack_into("<Q", bat, 8 * 4, end | f.PAYLOAD_FULLY_PRESENT)
    entries: list[list[tuple[int, bytes | int]]] = [
        [(3 * MiB, bytes(bat)), (end, b"n" * 8192)],
        [(4 * MiB, 8192), (end + 4096, b"m" * 4096)],
        [(end + 65536, b"o" * 4096)],
    ]
    write_pending_log(path, entries)
    return path.read_bytes()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vhdx-fuzz")


@pytest.fixture(autouse=True)
def _trace_memory() -> object:
    tracemalloc.start()
    yield
    tracemalloc.stop()


FUZZ = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.mark.timeout(120)
@FUZZ
@given(data=st.data())
def test_fuzz_writer_image(workdir: Path, data: st.DataObject) -> None:
    _fuzz(workdir / "mutated.vhdx", _writer_sample(workdir), data)


@pytest.mark.timeout(120)
@FUZZ
@given(data=st.data())
def test_fuzz_differencing_child(workdir: Path, data: st.DataObject) -> None:
    sample = _child_sample(workdir)  # its parent.vhdx lies beside the mutated copy
    _fuzz(workdir / "mutated.avhdx", sample, data)


@pytest.mark.timeout(120)
@FUZZ
@given(data=st.data())
def test_fuzz_qemu_image(workdir: Path, data: st.DataObject) -> None:
    _fuzz(workdir / "mutated-qemu.vhdx", _qemu_sample(workdir), data)


@pytest.mark.timeout(120)
@FUZZ
@given(data=st.data())
def test_fuzz_pending_log(workdir: Path, data: st.DataObject) -> None:
    _fuzz(workdir / "mutated-log.vhdx", _log_sample(workdir), data)


def test_unmutated_samples_open(workdir: Path) -> None:
    assert len(_log_entries(_log_sample(workdir))) == 3
    for name, sample in [
        ("a.vhdx", _writer_sample(workdir)),
        ("b.avhdx", _child_sample(workdir)),
        ("c.vhdx", _qemu_sample(workdir)),
        ("d.vhdx", _log_sample(workdir)),
    ]:
        path = workdir / name
        path.write_bytes(sample)
        with VhdxReader.open(path) as disk:
            assert disk.size_bytes == SIZE
            assert any(disk.read(0, SIZE))
