"""VHDX log replay checked against qemu, and a dirty VHDX backed up through the real CLI.

Images get a pending log from the project's `write_pending_log` (the updates reach the log
only). qemu is the independent side: it refuses to open them read-only ("contains a log that
needs to be replayed"), `qemu-img check -r all` replays the log into a COPY, and `qemu-img
convert -O raw` of that copy gives the bytes our in-memory replay of the untouched original
must read. qemu picks the run whose *first* entry has the highest sequence number and ignores
Tail, so these logs are single runs from the start of the ring; wrap-around, Tail and damaged
logs are checked against the spec in tests/unit/sources/vhdx/test_vhdx_log.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import uuid
from pathlib import Path

import pytest
from cli_harness import Cli, assert_one_line_error

from e3backup.sources.vhdx import VhdxReader, write_vhdx
from e3backup.sources.vhdx import formats as f
from e3backup.sources.vhdx.log_writer import LogOp, write_pending_log
from fixtures.real import require_tool as _tool
from fixtures.real import run_tool as _run

MiB = 1024 * 1024
SIZE = 8 * MiB
SECTOR = 4096


def _pattern(length: int, seed: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "little")).digest(length)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _regions(path: Path) -> dict[uuid.UUID, f.RegionEntry]:
    with path.open("rb") as fh:
        fh.seek(f.REGION_TABLE_OFFSETS[0])
        entries = f.unpack_region_table(fh.read(f.REGION_TABLE_SIZE))
    assert entries is not None
    return {e.guid: e for e in entries}


def _sector(path: Path, offset: int, change: bytes = b"") -> tuple[int, bytes]:
    """The file's 4 KiB sector around `offset` with `change` written at `offset`."""
    start = offset - offset % SECTOR
    with path.open("rb") as fh:
        fh.seek(start)
        sector = bytearray(fh.read(SECTOR))
    sector[offset - start : offset - start + len(change)] = change
    return start, bytes(sector)


def _bat_entry(path: Path, index: int) -> int:
    bat = _regions(path)[f.BAT_GUID].offset
    with path.open("rb") as fh:
        fh.seek(bat + 8 * index)
        value: int = struct.unpack("<Q", fh.read(8))[0]
    return value


def _size_item(path: Path) -> int:
    """File offset of the Virtual Disk Size metadata item."""
    meta = _regions(path)[f.METADATA_GUID].offset
    with path.open("rb") as fh:
        fh.seek(meta)
        table = f.unpack_metadata_table(fh.read(f.METADATA_TABLE_SIZE))
    assert table is not None
    return meta + next(e.offset for e in table if e.item == f.VIRTUAL_DISK_SIZE_GUID)


def _writer_log(path: Path) -> list[list[LogOp]]:
    """Our writer's image: a new block (space the host already added to the file) with its
    data and BAT entry, zeros over written data, a sector rewritten, the disk grown to 9 MiB."""
    write_vhdx(path, SIZE, [(0, b"A" * MiB), (5 * MiB, b"B" * 8192)], block_size=MiB)
    end = path.stat().st_size
    os.truncate(path, end + MiB)
    bat = _regions(path)[f.BAT_GUID].offset
    block0 = _bat_entry(path, 0) >> 20 << 20
    return [
        [
            _sector(path, bat + 8 * 2, struct.pack("<Q", end | f.PAYLOAD_FULLY_PRESENT)),
            (end, _pattern(3 * SECTOR, 1)),
        ],
        [(block0 + 8192, 3 * SECTOR), (end + SECTOR, _pattern(SECTOR, 2))],
        [_sector(path, _size_item(path), struct.pack("<Q", SIZE + MiB))],
    ]


def _qemu_log(path: Path) -> list[list[LogOp]]:
    """qemu's own image: data and zeros over its blocks, then one of them set to ZERO in the
    BAT, in several entries."""
    _run(_tool("qemu-img"), "create", "-q", "-f", "vhdx", "-o", "block_size=1M", path, str(SIZE))
    _run(
        _tool("qemu-io"),
        "-f",
        "vhdx",
        "-c",
        "write -P 0x11 0 1M",
        "-c",
        "write -P 0x22 3M 64k",
        path,
    )
    bat = _regions(path)[f.BAT_GUID].offset
    block0, block3 = (_bat_entry(path, i) >> 20 << 20 for i in (0, 3))
    return [
        [(block0 + 4 * SECTOR, _pattern(2 * SECTOR, 3))],
        [(block3, SECTOR), (block0 + 5 * SECTOR, 2 * SECTOR)],
        [_sector(path, bat + 8 * 3, struct.pack("<Q", f.PAYLOAD_ZERO))],
    ]


@pytest.fixture(scope="module", params=["writer", "qemu"])
def dirty(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image with a pending log (and, for the writer's, stale entries of an older session
    after it), `<name>.before.raw`: the disk as qemu reads it without the log, and
    `<name>.qemu.sha256`: the digest of what qemu reads once it replayed the log of a copy."""
    path = tmp_path_factory.mktemp("vhdx-log") / f"{request.param}.vhdx"
    entries = (_writer_log if request.param == "writer" else _qemu_log)(path)
    before = path.with_suffix(".before.raw")
    _run(_tool("qemu-img"), "convert", "-f", "vhdx", "-O", "raw", path, before)
    if request.param == "writer":
        write_pending_log(path, [[(SECTOR * 300, bytes(SECTOR))]] * 2, start=256 * 1024)
    write_pending_log(path, entries)
    path.with_suffix(".qemu.sha256").write_text(_sha(_qemu_replayed(path)))
    return path


def _qemu_replayed(image: Path) -> bytes:
    copy = image.with_name("copy-" + image.name)
    shutil.copyfile(image, copy)
    out = _run(_tool("qemu-img"), "check", "-r", "all", "-f", "vhdx", copy)
    assert "No errors were found" in out
    raw = copy.with_suffix(".raw")
    _run(_tool("qemu-img"), "convert", "-f", "vhdx", "-O", "raw", copy, raw)
    data = raw.read_bytes()
    copy.unlink()
    raw.unlink()
    return data


def test_replay_reads_what_qemu_reads_after_repairing_a_copy(dirty: Path) -> None:
    refused = _run_status(_tool("qemu-img"), "info", "-f", "vhdx", dirty)
    assert "log that needs to be replayed" in refused  # qemu agrees the log is pending
    digest = _sha(dirty.read_bytes())
    expected = dirty.with_suffix(".qemu.sha256").read_text()
    assert expected != _sha(dirty.with_suffix(".before.raw").read_bytes())
    with VhdxReader.open(dirty) as disk:
        assert _sha(disk.read(0, disk.size_bytes)) == expected
    assert _sha(dirty.read_bytes()) == digest


def test_backup_of_a_dirty_vhdx_restores_the_replayed_disk(
    dirty: Path, cli: Cli, tmp_path: Path
) -> None:
    cli.init("--encryption", "none")
    digest = _sha(dirty.read_bytes())
    snapshot = cli.backup(dirty)["id"]
    assert _sha(dirty.read_bytes()) == digest
    target = tmp_path / "restored.raw"
    assert cli.restore(snapshot, target).returncode == 0
    assert _sha(target.read_bytes()) == dirty.with_suffix(".qemu.sha256").read_text()


def test_backup_of_a_vhdx_with_a_damaged_log_is_refused(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "damaged.vhdx"
    write_vhdx(path, SIZE, [(0, b"A" * MiB)], block_size=MiB)
    write_pending_log(path, [[(4 * MiB, _pattern(SECTOR, 5))], [(4 * MiB, bytes(SECTOR))]])
    with path.open("r+b") as fh:
        fh.seek(MiB + SECTOR + 10)  # the first entry's data sector (a newer entry follows it)
        fh.write(b"\xff")
    digest = _sha(path.read_bytes())
    cli.init("--encryption", "none")
    result = cli.run("backup", "image", path)
    assert_one_line_error(result, "log cannot be replayed", "checksum mismatch", str(path))
    assert _sha(path.read_bytes()) == digest
    assert cli.snapshots() == []


def _run_status(*args: str | Path) -> str:
    """stdout and stderr of a tool expected to fail."""
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stdout
    return proc.stdout + proc.stderr
