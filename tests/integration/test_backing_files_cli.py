"""Issue 8 item 1: a raw disk whose bytes are an image header naming a host file must never make
a backup read that file. Probed images that name other files are refused; `--format` states the
format; `--format X --follow-backing` follows a chain on purpose.

qemu-img builds the images (and the hostile headers a guest could write into its raw disk);
`qemu-img convert` gives the expected bytes of a deliberately followed chain.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_harness import Cli, MiB, assert_one_line_error, sha256

from e3backup.sources.vhdx import VhdxWriter
from fixtures.real import require_tool as _tool
from fixtures.real import run_tool as _run

SECRET = b"TOP SECRET host data"
SOURCE_ERROR = 30


@pytest.fixture
def repo(cli: Cli) -> Cli:
    cli.init("--chunk-size", "65536")
    return cli


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "host-secret.txt"
    path.write_bytes(SECRET.ljust(MiB, b"\n"))
    return path


def _qemu(tool: str, *args: str | Path) -> str:
    return _run(_tool(tool), *args)


def _assert_refused(repo: Cli, image: Path, *args: str, hint: str) -> None:
    """Refused with a source error naming how to proceed, and nothing stored."""
    result = repo.run("backup", "image", image, *args)
    assert result.returncode == SOURCE_ERROR, result.describe()
    assert_one_line_error(result, hint)
    assert repo.snapshots() == []
    assert not any(p.is_file() for p in (repo.repo / "packs").rglob("*"))


def _assert_restores_as(repo: Cli, snapshot: str, expected: Path, tmp_path: Path) -> None:
    restored = tmp_path / "restored.raw"
    assert repo.restore(snapshot, restored).returncode == 0
    assert restored.stat().st_size == expected.stat().st_size
    assert sha256(restored) == sha256(expected)
    assert SECRET not in restored.read_bytes()


def _guest_disk_with_qcow2_header(tmp_path: Path, secret: Path) -> Path:
    """The reproduction: a 16 MiB raw disk that starts with a qcow2 header naming `secret`."""
    guest = tmp_path / "guest.img"
    _qemu("qemu-img", "create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw", guest, "1M")
    with open(guest, "r+b") as f:
        f.truncate(16 * MiB)
    return guest


def test_a_probed_qcow2_header_naming_a_host_file_is_refused(
    repo: Cli, tmp_path: Path, secret: Path
) -> None:
    _tool("qemu-nbd")
    guest = _guest_disk_with_qcow2_header(tmp_path, secret)
    _assert_refused(repo, guest, hint="--format qcow2 --follow-backing")

    # Stated as raw, the disk is backed up as the 16 MiB of bytes it is.
    doc = repo.backup(guest, "--format", "raw")
    assert doc["disks"][0]["size_bytes"] == 16 * MiB
    _assert_restores_as(repo, doc["id"], guest, tmp_path)


def test_a_stated_format_still_does_not_follow_a_backing_file(
    repo: Cli, tmp_path: Path, secret: Path
) -> None:
    guest = _guest_disk_with_qcow2_header(tmp_path, secret)
    _assert_refused(repo, guest, "--format", "qcow2", hint="add --follow-backing")


def test_a_probed_qcow2_external_data_file_is_refused(
    repo: Cli, tmp_path: Path, secret: Path
) -> None:
    guest = tmp_path / "guest.img"
    data = tmp_path / "data.bin"
    _qemu("qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={data}", guest, "1M")
    data.write_bytes(secret.read_bytes())  # the data file now holds the host's bytes
    _assert_refused(repo, guest, hint="--format qcow2 --follow-backing")


def test_a_probed_vmdk_descriptor_naming_a_host_file_is_refused(
    repo: Cli, tmp_path: Path, secret: Path
) -> None:
    """A raw disk that starts with a VMDK text descriptor whose flat extent is a host file."""
    guest = tmp_path / "guest.img"
    descriptor = (
        b"# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
        b'createType="monolithicFlat"\n\nRW 2048 FLAT "' + str(secret).encode() + b'" 0\n'
    )
    guest.write_bytes(descriptor.ljust(16 * MiB, b"\0"))
    _assert_refused(repo, guest, hint="--format vmdk --follow-backing")
    doc = repo.backup(guest, "--format", "raw")
    _assert_restores_as(repo, doc["id"], guest, tmp_path)


def test_a_vmdk_chain_is_refused_probed_and_followed_on_request(repo: Cli, tmp_path: Path) -> None:
    _tool("qemu-nbd")
    base, child = tmp_path / "base.vmdk", tmp_path / "child.vmdk"
    _qemu("qemu-img", "create", "-q", "-f", "vmdk", base, "8M")
    _qemu("qemu-io", "-f", "vmdk", "-c", "write -P 0x61 0 3M", base)
    _qemu("qemu-img", "create", "-q", "-f", "vmdk", "-b", base, "-F", "vmdk", child)
    _qemu("qemu-io", "-f", "vmdk", "-c", "write -P 0x62 1M 64k", child)
    _assert_refused(repo, child, hint="--format vmdk --follow-backing")

    expected = tmp_path / "expected.raw"
    _qemu("qemu-img", "convert", "-f", "vmdk", "-O", "raw", child, expected)
    doc = repo.backup(child, "--format", "vmdk", "--follow-backing")
    _assert_restores_as(repo, doc["id"], expected, tmp_path)


def test_a_qcow2_chain_is_followed_on_request(repo: Cli, tmp_path: Path) -> None:
    _tool("qemu-nbd")
    base, child = tmp_path / "base.qcow2", tmp_path / "child.qcow2"
    _qemu("qemu-img", "create", "-q", "-f", "qcow2", base, "8M")
    _qemu("qemu-io", "-f", "qcow2", "-c", "write -P 0x61 0 3M", "-c", "write -P 0x63 7M 1M", base)
    _qemu("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", child)
    _qemu("qemu-io", "-f", "qcow2", "-c", "write -P 0x62 1M 64k", "-c", "write -z 7M 4k", child)
    _assert_refused(repo, child, hint="--format qcow2 --follow-backing")

    expected = tmp_path / "expected.raw"
    _qemu("qemu-img", "convert", "-f", "qcow2", "-O", "raw", child, expected)
    doc = repo.backup(child, "--format", "qcow2", "--follow-backing")
    _assert_restores_as(repo, doc["id"], expected, tmp_path)


def test_a_probed_vhdx_naming_a_parent_is_refused(repo: Cli, tmp_path: Path) -> None:
    """A raw disk that starts with a differencing VHDX whose parent is a host VHDX."""
    host = tmp_path / "host"
    host.mkdir()
    parent = host / "other-vm.vhdx"
    with VhdxWriter(parent, 16 * MiB, block_size=MiB) as writer:
        writer.write(0, SECRET.ljust(MiB, b"\n"))
    guest = tmp_path / "guest.img"
    with VhdxWriter.create_child(guest, parent, locator_paths={"absolute_win32_path": str(parent)}):
        pass
    with open(guest, "r+b") as f:
        f.truncate(32 * MiB)  # the rest of the guest's raw disk
    _assert_refused(repo, guest, hint="--format vhdx --follow-backing")
    doc = repo.backup(guest, "--format", "raw")
    _assert_restores_as(repo, doc["id"], guest, tmp_path)


def test_follow_backing_needs_a_stated_format(repo: Cli, tmp_path: Path) -> None:
    image = tmp_path / "disk.qcow2"
    _qemu("qemu-img", "create", "-q", "-f", "qcow2", image, "1M")
    result = repo.run("backup", "image", image, "--follow-backing")
    assert result.returncode == 2, result.describe()
    assert_one_line_error(result, "--follow-backing needs --format")
    result = repo.run("backup", "image", image, "--format", "qcow3")
    assert result.returncode == 2, result.describe()
    assert_one_line_error(result, "unknown image format")
