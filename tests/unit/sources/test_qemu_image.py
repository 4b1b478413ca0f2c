"""QemuImageReader on real qcow2 / VMDK files: allocation, parallel reads, qemu-nbd lifecycle."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from e3backup.core.errors import CommandFailed, E3Error, SourceError
from e3backup.sources.qemu_image import QemuImageReader, accepts_connections
from fixtures.real import require_tool as _tool
from fixtures.real import run_tool as _run

KiB = 1024
MiB = 1024 * KiB
SIZE = 40 * MiB + 512
WRITES = [(0, 4096, 0x11), (3 * MiB + 512, 70 * KiB, 0x22), (20 * MiB, 2 * MiB, 0x33)]
WRITES += [(SIZE - 512, 512, 0x44)]


def _image(tmp: Path, fmt: str, options: str = "") -> tuple[Path, bytes]:
    """A `fmt` image with WRITES (and a zeroed range), and its bytes from qemu-img convert."""
    _tool("qemu-nbd")
    image = tmp / f"disk.{fmt}"
    create = ["create", "-q", "-f", fmt, *(["-o", options] if options else []), image, str(SIZE)]
    _run(_tool("qemu-img"), *create)
    commands = [f"write -P {pattern:#x} {offset} {length}" for offset, length, pattern in WRITES]
    commands.append(f"write -z {10 * MiB} {MiB}")
    _run(_tool("qemu-io"), "-f", fmt, *(a for c in commands for a in ("-c", c)), image)
    raw = tmp / "disk.raw"
    _run(_tool("qemu-img"), "convert", "-f", fmt, "-O", "raw", image, raw)
    return image, raw.read_bytes()


def _qemu_data_extents(image: Path, fmt: str) -> list[tuple[int, int]]:
    """`qemu-img map` data:true extents, adjacent ones merged."""
    extents: list[tuple[int, int]] = []
    for e in json.loads(_run(_tool("qemu-img"), "map", "-f", fmt, "--output=json", image)):
        if not e["data"]:
            continue
        if extents and sum(extents[-1]) == e["start"]:
            extents[-1] = (extents[-1][0], extents[-1][1] + e["length"])
        else:
            extents.append((e["start"], e["length"]))
    return extents


@pytest.fixture(params=["qcow2", "vmdk"])
def image(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str, bytes]:
    fmt: str = request.param
    path, raw = _image(tmp_path, fmt)
    return path, fmt, raw


def test_allocated_extents_are_qemus_data_extents(image: tuple[Path, str, bytes]) -> None:
    path, fmt, _ = image
    with QemuImageReader.open(path, fmt) as reader:
        assert reader.size_bytes == SIZE
        extents = list(reader.allocated_extents())
    assert extents == _qemu_data_extents(path, fmt)
    for offset, length, _ in WRITES:  # every write lies inside an extent
        assert any(o <= offset and offset + length <= o + n for o, n in extents)
    if fmt == "qcow2":  # a zero cluster; VMDK (without zeroed_grain) stores the zeros as data
        assert not any(o <= 10 * MiB < o + n for o, n in extents)
    assert sum(n for _, n in extents) < SIZE // 4


def test_concurrent_reads_equal_the_raw_conversion(image: tuple[Path, str, bytes]) -> None:
    path, fmt, raw = image
    pieces = [(o, min(MiB + 4096, SIZE - o)) for o in range(0, SIZE, MiB + 4096)]
    with QemuImageReader.open(path, fmt) as reader, ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda piece: reader.read(*piece), pieces))
        assert b"".join(got) == raw
        assert reader.bytes_read == SIZE
        assert reader.connection_count <= 7  # one control connection + one per thread


def test_bytes_read_counts_only_what_was_read(image: tuple[Path, str, bytes]) -> None:
    path, fmt, raw = image
    with QemuImageReader.open(path, fmt) as reader:
        assert reader.bytes_read == 0  # opening and block status read no data
        extents = list(reader.allocated_extents())
        for offset, length in extents:
            assert reader.read(offset, length) == raw[offset : offset + length]
        assert reader.bytes_read == sum(n for _, n in extents)


def _qemu_nbd_children() -> list[int]:
    """PIDs of qemu-nbd processes that are children of this test process."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        if name == "qemu-nbd" and int(rest.split()[1]) == os.getpid():
            children.append(int(entry.name))
    return children


def test_close_stops_qemu_nbd_and_removes_its_directory(tmp_path: Path) -> None:
    path, raw = _image(tmp_path, "qcow2")
    reader = QemuImageReader.open(path, "qcow2")
    pid, workdir = reader._daemon.pid, reader._dir
    assert pid is not None and workdir.is_dir()
    assert reader.read(0, 4096) == raw[:4096]
    reader.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not workdir.exists()
    reader.close()  # closing twice is harmless


@pytest.fixture
def private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point tempfile at an empty directory, to see what a reader leaves behind."""
    tempdir = tmp_path / "tmp"
    tempdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tempdir))
    return tempdir


@pytest.mark.parametrize(
    ("fmt", "forced", "message"),
    [
        ("vmdk", "qcow2", "not in qcow2 format"),  # the wrong format forced
        ("qcow2", "vdi", "qemu-nbd exited"),
    ],
)
def test_failed_open_cleans_up(
    tmp_path: Path, private_tempdir: Path, fmt: str, forced: str, message: str
) -> None:
    path, _ = _image(tmp_path, fmt)
    with pytest.raises(CommandFailed, match=message):
        QemuImageReader.open(path, forced)
    assert list(private_tempdir.iterdir()) == []
    assert _qemu_nbd_children() == []


def test_garbage_qcow2_reports_qemu_nbds_error(tmp_path: Path, private_tempdir: Path) -> None:
    """qemu-nbd binds its socket before it opens the image; the cause must still be shown."""
    _tool("qemu-nbd")
    garbage = tmp_path / "garbage.qcow2"
    garbage.write_bytes(b"QFI\xfb" + bytes(range(256)) * 20)
    for _ in range(5):  # the race between connecting and qemu-nbd exiting
        with pytest.raises(CommandFailed, match=r"qemu-nbd exited with status 1: .*garbage"):
            QemuImageReader.open(garbage, "qcow2")
    assert list(private_tempdir.iterdir()) == []
    assert _qemu_nbd_children() == []


def test_missing_image_is_a_source_error(tmp_path: Path, private_tempdir: Path) -> None:
    with pytest.raises(SourceError, match="no such image file"):
        QemuImageReader.open(tmp_path / "missing.qcow2", "qcow2")
    with pytest.raises(E3Error):
        QemuImageReader.open(tmp_path, "qcow2")
    assert list(private_tempdir.iterdir()) == []


def test_a_backing_file_is_never_opened_unless_followed(tmp_path: Path) -> None:
    """Even with the format stated, qemu gets `backing: null`: the host file stays unread."""
    _tool("qemu-nbd")
    secret = tmp_path / "host-secret.txt"
    secret.write_bytes(b"TOP SECRET".ljust(MiB, b"\0"))
    guest = tmp_path / "guest.img"
    _run(_tool("qemu-img"), "create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw", guest, "1M")
    with QemuImageReader.open(guest, "qcow2") as reader:
        assert reader.read(0, MiB) == bytes(MiB)
    with QemuImageReader.open(guest, "qcow2", follow_backing=True) as reader:
        assert reader.read(0, 10) == b"TOP SECRET"


def test_a_socket_is_ready_only_once_it_listens(tmp_path: Path) -> None:
    """The file of a unix socket exists from bind(); connections are refused until listen()."""
    path = tmp_path / "s.sock"
    assert not accepts_connections(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        assert path.exists() and not accepts_connections(path)
        server.listen(1)
        assert accepts_connections(path)
