"""VHDX log replay (MS-VHDX 2.3): a pending log is applied in memory, a damaged one refused.

Images get their logs from `write_pending_log` (the updates go to the log only). The oracle
is a copy of the image with the same updates written into the file itself: the replayed
dirty image must read exactly like it, and the dirty file must stay untouched. The qemu
cross-check is in tests/integration/test_vhdx_log_qemu.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from vhdx_helpers import (
    MiB,
    apply_log_ops,
    current_header,
    log_entry_positions,
    make_vhdx,
    metadata_item_offset,
    patch_log_entry,
    sector_with,
)

from e3backup.core.errors import ImageFormatError, SourceError
from e3backup.sources.vhdx import VhdxReader
from e3backup.sources.vhdx import formats as f
from e3backup.sources.vhdx.log_writer import LogOp, write_pending_log

SIZE = 8 * MiB
WRITES = {0: b"A" * MiB, 5 * MiB: b"B" * 4096}  # block 0 lands at 4 MiB in the file, 5 at 5 MiB
BAT = 3 * MiB
BLOCK0 = 4 * MiB
Entries = list[list[LogOp]]


def _pattern(length: int, seed: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "little")).digest(length)


def _read_all(path: Path) -> tuple[int, bytes]:
    with VhdxReader.open(path) as disk:
        return disk.size_bytes, disk.read(0, disk.size_bytes)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _new_block(path: Path) -> tuple[Entries, dict[str, Any]]:
    """Block 2 allocated in space the host already added to the file, its data and BAT entry
    written through the log."""
    end = path.stat().st_size
    os.truncate(path, end + MiB)
    bat = sector_with(path, BAT + 8 * 2, struct.pack("<Q", end | f.PAYLOAD_FULLY_PRESENT))
    return [[bat, (end, _pattern(8192, 1)), (end + 65536, _pattern(4096, 2))]], {}


def _zeros(path: Path) -> tuple[Entries, dict[str, Any]]:
    """Zero descriptors: block 5's data, then the BAT sector (unmapping blocks 0 and 5)
    rewritten in the same entry with only block 5 mapped again."""
    block5 = sector_with(path, BAT + 8 * 5, b"")[1][40:48]
    bat = bytearray(4096)
    bat[40:48] = block5
    return [[(5 * MiB, 8192)], [(BAT, 4096), (BAT, bytes(bat))]], {}


def _overrides(path: Path) -> tuple[Entries, dict[str, Any]]:
    """Several entries writing the same sectors; the newest must win."""
    at = BLOCK0 + 20 * 4096
    return [
        [(at, _pattern(8192, 3))],
        [(at + 4096, _pattern(4096, 4)), (at + 8192, _pattern(4096, 5))],
        [(at, 4096), (at + 8192, _pattern(4096, 6))],
    ], {}


def _wraps(path: Path) -> tuple[Entries, dict[str, Any]]:
    """Entries that run over the end of the log ring and continue at its start."""
    entries: Entries = [[(BLOCK0 + 4096 * i, _pattern(8192, 10 + i))] for i in range(3)]
    return entries, {"start": current_header(path).log_length - 8192}


def _metadata(path: Path) -> tuple[Entries, dict[str, Any]]:
    """The virtual disk size grown from 8 to 9 MiB through the log."""
    item = metadata_item_offset(path, f.VIRTUAL_DISK_SIZE_GUID)
    return [[sector_with(path, item, struct.pack("<Q", SIZE + MiB))]], {}


SCENARIOS: dict[str, Callable[[Path], tuple[Entries, dict[str, Any]]]] = {
    "new block": _new_block,
    "zero descriptors": _zeros,
    "entries override each other": _overrides,
    "wraps around the ring": _wraps,
    "metadata update": _metadata,
}


def _dirty(tmp_path: Path, scenario: str, applied_too: bool = False) -> tuple[Path, Path, Path]:
    """(image with a pending log, the same updates applied to a copy, the copy before them)."""
    dirty = make_vhdx(tmp_path / "dirty.vhdx", SIZE, WRITES, block_size=MiB)
    entries, options = SCENARIOS[scenario](dirty)
    before = tmp_path / "before.vhdx"
    applied = tmp_path / "applied.vhdx"
    shutil.copyfile(dirty, before)
    shutil.copyfile(dirty, applied)
    apply_log_ops(applied, entries)
    if applied_too:
        apply_log_ops(dirty, entries)
    write_pending_log(dirty, entries, **options)
    return dirty, applied, before


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_replay_reads_like_the_updates_applied(tmp_path: Path, scenario: str) -> None:
    dirty, applied, before = _dirty(tmp_path, scenario)
    assert log_entry_positions(dirty)
    digest = _sha(dirty)
    expected = _read_all(applied)
    assert expected != _read_all(before)  # the log changes what the disk holds
    assert _read_all(dirty) == expected
    assert _sha(dirty) == digest  # never written


def test_log_already_applied_to_the_file(tmp_path: Path) -> None:
    dirty, applied, _ = _dirty(tmp_path, "new block", applied_too=True)
    assert _read_all(dirty) == _read_all(applied)


def test_replayed_disk_reads_allocated_extents_from_the_log(tmp_path: Path) -> None:
    dirty, _, _ = _dirty(tmp_path, "new block")
    with VhdxReader.open(dirty) as disk:
        assert list(disk.allocated_extents()) == [(0, MiB), (2 * MiB, MiB), (5 * MiB, MiB)]
        assert disk.read(2 * MiB, 8192) == _pattern(8192, 1)
        assert disk.read(2 * MiB + 8192, 4096) == bytes(4096)


def test_log_guid_without_entries_reads_the_file_as_is(tmp_path: Path) -> None:
    """The header names a log, but nothing was logged before the host stopped."""
    path = make_vhdx(tmp_path / "d.vhdx", SIZE, WRITES, block_size=MiB)
    expected = _read_all(path)
    write_pending_log(path, [])
    assert current_header(path).log_guid.int != 0
    assert _read_all(path) == expected


def test_entries_of_an_older_session_are_ignored(tmp_path: Path) -> None:
    path = make_vhdx(tmp_path / "d.vhdx", SIZE, WRITES, block_size=MiB)
    expected = _read_all(path)
    write_pending_log(path, [[(BLOCK0, _pattern(4096, 7))]] * 3, start=65536)  # older LogGuid
    write_pending_log(path, [[(BLOCK0 + 4096, b"A" * 4096)]], first_sequence=9)
    assert len(log_entry_positions(path)) == 4
    assert _read_all(path) == expected


def test_entries_before_the_tail_are_not_replayed(tmp_path: Path) -> None:
    """The newest entry's Tail marks where replay starts; older entries were flushed."""
    path = make_vhdx(tmp_path / "d.vhdx", SIZE, WRITES, block_size=MiB)
    entries: Entries = [[(BLOCK0, _pattern(4096, 1))], [(BLOCK0 + 4096, _pattern(4096, 2))]]
    write_pending_log(path, entries, tail=8192)
    assert log_entry_positions(path) == [0, 8192]
    with VhdxReader.open(path) as disk:
        assert disk.read(0, 8192) == b"A" * 4096 + _pattern(4096, 2)


def test_last_file_offset_extends_the_file_with_zeros(tmp_path: Path) -> None:
    """A block past the end of the file that the log says exists reads as what the log wrote
    into it, the rest as zeros (the host's extension of the file was lost)."""
    path = make_vhdx(tmp_path / "d.vhdx", SIZE, WRITES, block_size=MiB)
    end = path.stat().st_size
    bat = sector_with(path, BAT + 8 * 3, struct.pack("<Q", end | f.PAYLOAD_FULLY_PRESENT))
    write_pending_log(path, [[bat, (end + 4096, _pattern(4096, 8))]], last_file_offset=end + MiB)
    with VhdxReader.open(path) as disk:
        assert disk.read(3 * MiB, 12288) == bytes(4096) + _pattern(4096, 8) + bytes(4096)
        assert disk.read(4 * MiB - 4096, 4096) == bytes(4096)
    assert path.stat().st_size == end


# --- damage: three entries (a data sector each, the third a zero descriptor) at 0, 8 and 16 KiB


def _three_entries(path: Path, **options: Any) -> list[int]:
    entries: Entries = [
        [(BLOCK0, _pattern(4096, 1))],
        [(BLOCK0 + 4096, _pattern(4096, 2))],
        [(BLOCK0 + 8192, 4096)],
    ]
    write_pending_log(path, entries, **options)
    return log_entry_positions(path)


def _set_sequence(path: Path, position: int, sequence: int) -> None:
    """Every sequence number of the one-data-sector entry at `position`, consistently."""
    patch_log_entry(path, position, 16, struct.pack("<Q", sequence), reseal=False)
    patch_log_entry(path, position, 64 + 24, struct.pack("<Q", sequence), reseal=False)
    patch_log_entry(path, position, 4096 + 4, struct.pack("<I", sequence >> 32), reseal=False)
    patch_log_entry(path, position, 8188, struct.pack("<I", sequence & 0xFFFFFFFF))


DamageFn = Callable[[Path, list[int]], None]
DAMAGE: dict[str, tuple[DamageFn, str]] = {
    "checksum of a middle entry (its data)": (
        lambda p, e: patch_log_entry(p, e[1], 4096 + 700, b"\xff", reseal=False),
        r"log offset 0x2000: sequence 2: checksum mismatch",
    ),
    "entry signature": (
        lambda p, e: patch_log_entry(p, e[1], 0, b"LOGE", reseal=False),
        r"log offset 0x2000: its signature is not 'loge'",
    ),
    "LogGuid of a middle entry": (
        lambda p, e: patch_log_entry(p, e[1], 32, uuid.uuid4().bytes_le),
        r"sequence 3\) is not part of the active sequence 1\.\.1",
    ),
    "LogGuid of the first entry": (
        lambda p, e: patch_log_entry(p, e[0], 32, uuid.uuid4().bytes_le),
        r"no complete log sequence",
    ),
    "sequence gap": (
        lambda p, e: _set_sequence(p, e[1], 7),
        r"sequence 7\) is not part of the active sequence 1\.\.1",
    ),
    "split data sector sequence": (
        lambda p, e: patch_log_entry(p, e[1], 4096 + 4, struct.pack("<I", 1)),
        r"data sector 0 carries sequence number 4294967298",
    ),
    "data sector signature": (
        lambda p, e: patch_log_entry(p, e[1], 4096, b"date"),
        r"data sector 0 has no 'data' signature",
    ),
    "descriptor sequence": (
        lambda p, e: patch_log_entry(p, e[1], 64 + 24, struct.pack("<Q", 3)),
        r"a descriptor carries sequence number 3",
    ),
    "descriptor signature": (
        lambda p, e: patch_log_entry(p, e[1], 64, b"dexc"),
        r"neither 'desc' nor 'zero'",
    ),
    "descriptor file offset": (
        lambda p, e: patch_log_entry(p, e[1], 64 + 16, struct.pack("<Q", BLOCK0 + 512)),
        r"file offset 0x400200 is not 4 KiB aligned",
    ),
    "zero length": (
        lambda p, e: patch_log_entry(p, e[2], 64 + 8, struct.pack("<Q", 100)),
        r"zero descriptor length 100",
    ),
    "entry length": (
        lambda p, e: patch_log_entry(p, e[1], 8, struct.pack("<I", 12288)),
        r"entry length 12288 does not match its 1 descriptors",
    ),
    "sequence number 0": (
        lambda p, e: _set_sequence(p, e[0], 0),
        r"sequence 0: sequence number 0",
    ),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_log_is_refused(tmp_path: Path, case: str) -> None:
    path = make_vhdx(tmp_path / "d.vhdx", SIZE, WRITES, block_size=MiB)
    positions = _three_entries(path)
    assert positions == [0, 8192, 16384]
    _read_all(path)  # intact, it replays
    damage, message = DAMAGE[case]
    damage(path, positions)
    digest = _sha(path)
    with pytest.raises(SourceError, match=r"cannot be replayed: .*" + message) as caught:
        VhdxReader.open(path)
    assert isinstance(caught.value, ImageFormatError)
    assert str(path) in str(caught.value)
    assert _sha(path) == digest


def test_torn_newest_entry_is_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A crash inside the newest log write: that entry was never applied, Hyper-V skips it."""
    two = make_vhdx(tmp_path / "two.vhdx", SIZE, WRITES, block_size=MiB)
    write_pending_log(two, [[(BLOCK0, _pattern(4096, 1))], [(BLOCK0 + 4096, _pattern(4096, 2))]])
    expected = _read_all(two)
    path = make_vhdx(tmp_path / "d.vhdx", SIZE, WRITES, block_size=MiB)
    positions = _three_entries(path)
    full = _read_all(path)
    patch_log_entry(path, positions[2], 64 + 40, b"\x01", reseal=False)  # its checksum fails
    digest = _sha(path)
    with caplog.at_level("WARNING"):
        assert _read_all(path) == expected != full
    assert "log offset 0x4000 was torn" in caplog.text
    assert _sha(path) == digest


def test_torn_entry_followed_by_newer_ones_is_refused(tmp_path: Path) -> None:
    """Damage with newer entries after it is not a torn write: refused."""
    path = make_vhdx(tmp_path / "d.vhdx", SIZE, WRITES, block_size=MiB)
    positions = _three_entries(path)
    patch_log_entry(path, positions[1], 64 + 40, b"\x01", reseal=False)
    with pytest.raises(ImageFormatError, match=r"log offset 0x2000: sequence 2: checksum"):
        VhdxReader.open(path)


def test_tail_outside_the_sequence_is_refused(tmp_path: Path) -> None:
    path = make_vhdx(tmp_path / "d.vhdx", SIZE, WRITES, block_size=MiB)
    _three_entries(path, tail=65536)
    with pytest.raises(ImageFormatError, match="no complete log sequence"):
        VhdxReader.open(path)


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    path = make_vhdx(tmp_path / "d.vhdx", SIZE, WRITES, block_size=MiB)
    size = path.stat().st_size
    _three_entries(path, flushed_file_offset=size + MiB)
    with pytest.raises(ImageFormatError, match=f"at least {size + MiB} bytes long.*truncated"):
        VhdxReader.open(path)


@pytest.mark.parametrize(
    ("where", "offset"),
    [("file id", 0), ("a header", 64 * 1024), ("the log", MiB + 65536), ("past the end", None)],
)
def test_write_outside_the_loggable_range_is_refused(
    tmp_path: Path, where: str, offset: int | None
) -> None:
    path = make_vhdx(tmp_path / "d.vhdx", SIZE, WRITES, block_size=MiB)
    target = path.stat().st_size if offset is None else offset
    write_pending_log(path, [[(BLOCK0, bytes(4096)), (target, bytes(4096))]])
    with pytest.raises(ImageFormatError, match=r"outside the file's loggable range"):
        VhdxReader.open(path)


def test_hostile_zero_range_is_refused_without_allocating(tmp_path: Path) -> None:
    path = make_vhdx(tmp_path / "d.vhdx", SIZE, WRITES, block_size=MiB)
    write_pending_log(path, [[(BLOCK0, 1 << 62)]])
    with pytest.raises(ImageFormatError, match="outside the file's loggable range"):
        VhdxReader.open(path)
