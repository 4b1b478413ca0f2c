"""NbdClient against a real qemu-nbd exporting a qcow2 image on a unix socket in tmp_path.

qemu is the oracle: `qemu-img convert -O raw` gives the bytes reads must return, and
`qemu-img map` the allocation that `base:allocation` block status must report.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from e3backup.exec.command import Command
from e3backup.exec.daemon import Daemon
from e3backup.sources.nbd import protocol as p
from e3backup.sources.nbd.client import NbdClient, NbdError
from fixtures.real import require_tool as _tool
from fixtures.real import run_tool as _run

KiB = 1024
MiB = 1024 * KiB
SIZE = 70 * MiB + 1536  # more than two MAX_READ_BYTES, not a multiple of the cluster size
EXPORT = "disk"
# (offset, length, pattern): data, a write across the 32 MiB boundary, the very last sector.
WRITES = [(0, 64 * KiB, 0x11), (MiB + 512, 4096, 0x22), (32 * MiB - 4096, 8192, 0x33)]
WRITES += [(SIZE - 512, 512, 0x44)]
ZEROED = (8 * MiB, MiB)  # written with `write -z`: a qcow2 zero cluster, reads as zeros


@dataclass(frozen=True)
class Export:
    socket: Path
    raw: bytes
    qemu_map: list[dict[str, int | bool]]
    pid: int


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Export]:
    qemu_nbd = _tool("qemu-nbd")
    tmp = tmp_path_factory.mktemp("nbd")
    image = tmp / "disk.qcow2"
    _run(_tool("qemu-img"), "create", "-q", "-f", "qcow2", image, str(SIZE))
    commands = [f"write -P {pattern:#x} {offset} {length}" for offset, length, pattern in WRITES]
    commands.append(f"write -z {ZEROED[0]} {ZEROED[1]}")
    _run(_tool("qemu-io"), "-f", "qcow2", *(a for c in commands for a in ("-c", c)), image)
    _run(_tool("qemu-img"), "convert", "-f", "qcow2", "-O", "raw", image, tmp / "disk.raw")
    qemu_map = json.loads(_run(_tool("qemu-img"), "map", "--output=json", image))
    sock = tmp / "nbd.sock"
    args = ["--read-only", "--persistent", "--shared=8", "--format=qcow2"]
    args += [f"--socket={sock}", f"--export-name={EXPORT}", str(image)]
    daemon = Daemon(Command(qemu_nbd), args, tmp / "qemu-nbd.log")
    daemon.start(ready=sock.exists)
    pid = daemon.pid
    assert pid is not None
    try:
        yield Export(sock, (tmp / "disk.raw").read_bytes(), qemu_map, pid)
    finally:
        daemon.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped and reaped: our own PID only


def _connect(export: Export, contexts: tuple[str, ...] = (p.BASE_ALLOCATION,)) -> NbdClient:
    return NbdClient.connect_unix(export.socket, EXPORT, contexts)


def test_size_and_negotiated_context(export: Export) -> None:
    with _connect(export) as client:
        assert client.size_bytes == SIZE == len(export.raw)
        assert set(client.meta_context_ids) == {p.BASE_ALLOCATION}


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (0, 512),
        (0, 64 * KiB + 1),  # data then a hole in one reply
        (MiB + 513, 4095),  # unaligned inside a write
        (32 * MiB - 4096, 8192),  # across the 32 MiB boundary
        (ZEROED[0] - 512, ZEROED[1] + 1024),  # hole, zero cluster, hole
        (SIZE - 512, 512),  # the last sector
        (SIZE, 0),
        (SIZE - 34 * MiB, 34 * MiB),  # longer than one request: split at MAX_READ_BYTES
    ],
)
def test_read_returns_exact_bytes(export: Export, offset: int, length: int) -> None:
    with _connect(export) as client:
        assert client.read(offset, length) == export.raw[offset : offset + length]


def test_reads_without_meta_context_and_in_parallel(export: Export) -> None:
    pieces = [(o, 3 * MiB + 7) for o in range(0, SIZE - 3 * MiB, 5 * MiB)]

    def read(piece: tuple[int, int]) -> bool:
        with _connect(export, ()) as client:
            return client.read(*piece) == export.raw[piece[0] : piece[0] + piece[1]]

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(read, pieces))


def _merged(extents: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    merged: list[tuple[int, int, int]] = []
    for offset, length, flags in extents:
        if merged and merged[-1][2] == flags and sum(merged[-1][:2]) == offset:
            merged[-1] = (merged[-1][0], merged[-1][1] + length, flags)
        else:
            merged.append((offset, length, flags))
    return merged


def _expected_extents(qemu_map: list[dict[str, int | bool]]) -> list[tuple[int, int, int]]:
    """qemu-img map → base:allocation: no data is a HOLE, zero is ZERO."""
    extents = []
    for e in qemu_map:
        flags = (0 if e["data"] else p.STATE_HOLE) | (p.STATE_ZERO if e["zero"] else 0)
        extents.append((int(e["start"]), int(e["length"]), flags))
    return _merged(extents)


def test_block_status_covers_the_export_with_qemu_allocation(export: Export) -> None:
    with _connect(export) as client:
        extents = list(client.extents(p.BASE_ALLOCATION))
    assert extents[0][0] == 0
    for (offset, length, _), (next_offset, _, _) in itertools.pairwise(extents):
        assert offset + length == next_offset
    assert sum(extents[-1][:2]) == SIZE
    assert _merged(extents) == _expected_extents(export.qemu_map)


def _flags_at(extents: list[tuple[int, int, int]], offset: int) -> int:
    return next(f for o, n, f in extents if o <= offset < o + n)


def test_block_status_flags_for_written_zeroed_and_unallocated(export: Export) -> None:
    with _connect(export) as client:
        extents = list(client.extents(p.BASE_ALLOCATION))
    for offset, length, _ in WRITES:
        assert _flags_at(extents, offset) == 0
        assert _flags_at(extents, offset + length - 1) == 0
    assert _flags_at(extents, ZEROED[0]) & p.STATE_ZERO
    assert _flags_at(extents, ZEROED[0] + ZEROED[1] - 1) & p.STATE_ZERO
    assert _flags_at(extents, 40 * MiB) == p.STATE_HOLE | p.STATE_ZERO  # never written


def test_block_status_from_an_offset_describes_from_there(export: Export) -> None:
    with _connect(export) as client:
        extents = client.block_status(p.BASE_ALLOCATION, MiB, 4096)
    assert extents[0][0] == MiB
    assert extents[0][1] > 0


def test_unknown_meta_context_fails_negotiation(export: Export) -> None:
    with pytest.raises(NbdError, match="does not offer qemu:dirty-bitmap:nope"):
        _connect(export, (p.BASE_ALLOCATION, "qemu:dirty-bitmap:nope"))
    with _connect(export) as client:  # the server is still fine
        assert client.read(0, 4) == b"\x11" * 4


def test_unknown_export_is_refused(export: Export) -> None:
    with pytest.raises(NbdError, match="refused"):
        NbdClient.connect_unix(export.socket, "no-such-export")


def test_block_status_for_a_context_not_negotiated(export: Export) -> None:
    with _connect(export, ()) as client, pytest.raises(NbdError, match="not negotiated"):
        client.block_status(p.BASE_ALLOCATION, 0, SIZE)


@pytest.mark.parametrize(("offset", "length"), [(SIZE, 1), (SIZE - 512, 513), (-1, 1), (0, -1)])
def test_read_outside_the_export_is_an_error(export: Export, offset: int, length: int) -> None:
    with _connect(export) as client:
        with pytest.raises(NbdError, match="outside the export"):
            client.read(offset, length)
        assert client.read(SIZE - 512, 512) == b"\x44" * 512  # the connection is still usable


def test_server_error_reply_is_an_nbd_error(export: Export) -> None:
    """A request past the end, sent below the client's own bounds check: qemu answers EINVAL."""
    with _connect(export) as client:
        buf = bytearray(4096)
        with pytest.raises(NbdError, match="NBD request failed"):
            client._read_into(buf, 0, SIZE, 4096)


def test_missing_socket_is_an_nbd_error(tmp_path: Path) -> None:
    with pytest.raises(NbdError, match="cannot connect"):
        NbdClient.connect_unix(tmp_path / "nothing.sock")


def test_not_an_nbd_server_is_an_nbd_error() -> None:
    ours, theirs = socket.socketpair()
    with theirs:
        theirs.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        with pytest.raises(NbdError, match="bad greeting"):
            NbdClient(ours)
    ours.close()


def test_server_hanging_up_during_handshake_is_an_nbd_error() -> None:
    ours, theirs = socket.socketpair()
    theirs.sendall(struct.pack(">QQH", p.NBDMAGIC, p.IHAVEOPT, p.FLAG_FIXED_NEWSTYLE))
    theirs.close()
    with pytest.raises(NbdError):
        NbdClient(ours)
    ours.close()
