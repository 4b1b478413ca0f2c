"""What `restore --to X [--overwrite]` may write: a new or existing regular file, or a block
device in place. Never a character device, FIFO, socket, directory or symlink, even with
--overwrite: the rename that commits a file target would replace the node itself (as root,
`--to /dev/null --overwrite` replaced the device node with a regular file)."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import Cli, MiB, assert_one_line_error, write_random

from fixtures.real import missing, require_tool, run_tool


@pytest.fixture
def image(cli: Cli, tmp_path: Path) -> Path:
    cli.init()
    path = tmp_path / "disk.img"
    write_random(path, 1 * MiB + 512, seed=21)
    cli.backup(path)
    return path


def test_dev_null_is_refused(cli: Cli, image: Path) -> None:
    """Without --overwrite, so that even the code before the fix could not replace the
    machine's /dev/null (the --overwrite case runs on a device node of the test's own)."""
    null = Path("/dev/null")
    before = null.lstat()
    result = cli.restore("latest", null)
    assert_one_line_error(result, "/dev/null is a character device", "regular file")
    after = null.lstat()
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (
        before.st_ino,
        before.st_rdev,
    )


def test_character_device_is_refused_even_with_overwrite(
    cli: Cli, image: Path, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        missing("creating a device node needs root")
    device = tmp_path / "null"
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # another /dev/null
    result = cli.restore("latest", device, "--overwrite")
    assert_one_line_error(result, "is a character device", "--overwrite replaces regular files")
    assert stat.S_ISCHR(device.lstat().st_mode)
    assert [p.name for p in tmp_path.iterdir() if "e3partial" in p.name] == []


def test_fifo_is_refused(cli: Cli, image: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = cli.restore("latest", fifo, "--overwrite")
    assert_one_line_error(result, "is a FIFO")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_socket_is_refused(cli: Cli, image: Path, tmp_path: Path) -> None:
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        result = cli.restore("latest", path, "--overwrite")
    assert_one_line_error(result, "is a socket")
    assert stat.S_ISSOCK(path.lstat().st_mode)


def test_symlink_to_a_file_is_refused_and_both_stay_untouched(
    cli: Cli, image: Path, tmp_path: Path
) -> None:
    pointee = tmp_path / "precious.img"
    pointee.write_bytes(b"precious data")
    link = tmp_path / "link.img"
    link.symlink_to(pointee)
    pointee_before = pointee.stat()
    result = cli.restore("latest", link, "--overwrite")
    assert_one_line_error(result, "is a symbolic link", str(pointee), "real path")
    assert link.is_symlink() and os.readlink(link) == str(pointee)
    assert pointee.read_bytes() == b"precious data"
    assert pointee.stat().st_mtime_ns == pointee_before.st_mtime_ns
    assert [p.name for p in tmp_path.iterdir() if "e3partial" in p.name] == []


def test_dangling_symlink_is_refused(cli: Cli, image: Path, tmp_path: Path) -> None:
    link = tmp_path / "dangling.img"
    link.symlink_to(tmp_path / "nowhere.img")
    result = cli.restore("latest", link)
    assert_one_line_error(result, "is a symbolic link")
    assert link.is_symlink() and not (tmp_path / "nowhere.img").exists()


def test_directory_is_refused_with_a_suggestion(cli: Cli, image: Path, tmp_path: Path) -> None:
    directory = tmp_path / "out"
    directory.mkdir()
    result = cli.restore("latest", directory, "--overwrite")
    assert_one_line_error(result, "is a directory", str(directory / "disk.img"))
    assert directory.is_dir() and list(directory.iterdir()) == []


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[Path]:
    """A real block device: a loop device over a 2 MiB file of 0xAA bytes."""
    losetup = require_tool("losetup", "mount")
    if os.geteuid() != 0:
        missing("loop devices need root")
    backing = tmp_path / "backing.bin"
    backing.write_bytes(b"\xaa" * 2 * MiB)
    device = Path(run_tool(losetup, "--find", "--show", backing).strip())
    try:
        yield device
    finally:
        run_tool(losetup, "--detach", device)


def test_block_device_is_written_in_place(
    cli: Cli, image: Path, tmp_path: Path, loop_device: Path
) -> None:
    """Unchanged behaviour: a block device is written in place (zeros included), directly or
    through a symlink (as /dev/disk/by-id/... names are)."""
    for target in (loop_device, tmp_path / "by-id-link"):
        if target != loop_device:
            target.symlink_to(loop_device)
        cli.ok("restore", "latest", "--to", target)
        assert stat.S_ISBLK(loop_device.stat().st_mode)
        size = image.stat().st_size
        with open(loop_device, "rb") as f:
            restored = f.read(size)
            rest = f.read()
        assert restored == image.read_bytes()
        assert rest == b"\xaa" * (2 * MiB - size)  # beyond the disk: left alone
        with open(loop_device, "r+b") as f:
            f.write(bytes(size))  # so the second round proves a second write
