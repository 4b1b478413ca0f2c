"""external_files finds every other file an image header names, in images made by qemu-img and
in the hand-written headers a guest could put into its raw disk."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from e3backup.sources.detect import detect_format
from e3backup.sources.image_refs import external_files
from e3backup.sources.vhdx import VhdxWriter
from fixtures.real import require_tool as _tool
from fixtures.real import run_tool as _run

MiB = 1024 * 1024


def _qemu_img(*args: str | Path) -> None:
    _run(_tool("qemu-img"), *args)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "host-secret.txt"
    path.write_bytes(b"TOP SECRET".ljust(MiB, b"\0"))
    return path


@pytest.mark.parametrize("fmt", ["qcow2", "vmdk", "vdi", "vpc", "qed", "vhdx"])
def test_a_standalone_image_names_nothing(tmp_path: Path, fmt: str) -> None:
    image = tmp_path / "disk"
    _qemu_img("create", "-q", "-f", fmt, image, "4M")
    assert external_files(image, detect_format(image)) == []


@pytest.mark.parametrize("fmt", ["qcow2", "qed"])
def test_a_backing_file_is_found(tmp_path: Path, secret: Path, fmt: str) -> None:
    image = tmp_path / "guest.img"
    _qemu_img("create", "-q", "-f", fmt, "-b", secret, "-F", "raw", image, "1M")
    assert external_files(image, fmt) == [f"backing file {str(secret)!r}"]


def test_a_qcow2_external_data_file_is_found(tmp_path: Path) -> None:
    image, data = tmp_path / "guest.img", tmp_path / "data.bin"
    _qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={data}", image, "1M")
    assert external_files(image, "qcow2") == [f"external data file {str(data)!r}"]


def test_a_vmdk_parent_is_found(tmp_path: Path) -> None:
    base, child = tmp_path / "base.vmdk", tmp_path / "child.vmdk"
    _qemu_img("create", "-q", "-f", "vmdk", base, "1M")
    _qemu_img("create", "-q", "-f", "vmdk", "-b", base, "-F", "vmdk", child)
    assert external_files(child, "vmdk") == [f"parent disk {str(base)!r}"]


def _descriptor(extent: Path) -> bytes:
    return (
        b"# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
        b'createType="monolithicFlat"\n\nRW 2048 FLAT "' + str(extent).encode() + b'" 0\n'
    )


def test_a_vmdk_descriptor_names_its_extents(tmp_path: Path, secret: Path) -> None:
    image = tmp_path / "guest.img"
    image.write_bytes(_descriptor(secret).ljust(16 * MiB, b"\0"))
    assert detect_format(image) == "vmdk"
    assert external_files(image, "vmdk") == [f"extent {str(secret)!r}"]
    flat = tmp_path / "flat.vmdk"  # qemu-img's own monolithicFlat: a descriptor + flat extent
    _qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", flat, "1M")
    assert external_files(flat, "vmdk") == ["extent 'flat-flat.vmdk'"]


def test_a_sparse_vmdk_header_without_capacity_is_a_descriptor(
    tmp_path: Path, secret: Path
) -> None:
    """qemu opens a KDMV header of capacity 0 through the descriptor embedded in it."""
    header = bytearray(512)
    header[:4] = b"KDMV"
    struct.pack_into("<IIQQQQ", header, 4, 1, 3, 0, 128, 1, 20)  # capacity 0, descriptor at 1
    image = tmp_path / "guest.img"
    image.write_bytes((bytes(header) + _descriptor(secret)).ljust(16 * MiB, b"\0"))
    assert external_files(image, "vmdk") == [f"extent {str(secret)!r}"]


def test_a_differencing_vhd_is_found(tmp_path: Path) -> None:
    image = tmp_path / "disk.vhd"
    _qemu_img("create", "-q", "-f", "vpc", image, "4M")
    data = bytearray(image.read_bytes())
    for footer in (0, len(data) - 512):  # a dynamic VHD: footer copy at 0 and the footer
        struct.pack_into(">I", data, footer + 60, 4)
    image.write_bytes(bytes(data))
    assert external_files(image, "vpc") == ["parent disk (a differencing VHD)"]


def test_a_vhdx_parent_is_found(tmp_path: Path) -> None:
    base, child = tmp_path / "base.vhdx", tmp_path / "child.avhdx"
    with VhdxWriter(base, 4 * MiB, block_size=MiB):
        pass
    with VhdxWriter.create_child(child, base):
        pass
    assert external_files(child, "vhdx") == ["parent disk '.\\\\base.vhdx'"]
    assert external_files(base, "vhdx") == []


@pytest.mark.parametrize("magic", [b"QFI\xfb", b"QED\x00", b"KDMV", b"COWD", b"# Disk Descr"])
@pytest.mark.parametrize("size", [4, 100, 4096])
def test_short_or_random_headers_never_crash(tmp_path: Path, magic: bytes, size: int) -> None:
    image = tmp_path / "garbage"
    rng = random.Random(size)
    for _ in range(20):
        image.write_bytes(magic + rng.randbytes(size))
        fmt = detect_format(image)
        assert all(isinstance(item, str) for item in external_files(image, fmt))
