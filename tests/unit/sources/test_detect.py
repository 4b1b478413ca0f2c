"""detect_format decides by content: real images made by qemu-img, under misleading names."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from e3backup.core.errors import ImageFormatError, SourceError
from e3backup.sources.detect import detect_format, open_disk
from e3backup.sources.image import RawImageReader
from e3backup.sources.qemu_image import QemuImageReader
from e3backup.sources.vhdx import VhdxReader
from fixtures.real import require_tool as _tool

MiB = 1024 * 1024
SIZE = 3 * MiB


def _qemu_image(path: Path, fmt: str, options: str = "") -> Path:
    """A `fmt` image with a little data, made by qemu-img / qemu-io under any file name."""
    qemu_img, opts = _tool("qemu-img"), ["-o", options] if options else []
    # Written as qcow2 and converted: qemu-io cannot write every format (streamOptimized VMDK).
    source = path.with_name(path.name + ".src")
    steps = [
        [qemu_img, "create", "-q", "-f", "qcow2", str(source), str(SIZE)],
        [_tool("qemu-io"), "-f", "qcow2", "-c", "write -P 0x5a 4096 8192", str(source)],
        [qemu_img, "convert", "-f", "qcow2", "-O", fmt, *opts, str(source), str(path)],
    ]
    for argv in steps:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
    source.unlink()
    return path


# (qemu-img format, creation options, what detect_format must say)
QEMU_IMAGES = [
    ("qcow2", "", "qcow2"),
    ("vmdk", "subformat=monolithicSparse", "vmdk"),
    ("vmdk", "subformat=streamOptimized", "vmdk"),
    ("vmdk", "subformat=monolithicFlat", "vmdk"),  # the text descriptor file
    ("vhdx", "", "vhdx"),
    ("vhdx", "subformat=fixed", "vhdx"),
    ("vdi", "", "vdi"),
    ("vpc", "", "vpc"),  # dynamic VHD: a footer copy at offset 0
    ("vpc", "subformat=fixed", "vpc"),  # fixed VHD: the footer only at the end
    ("qed", "", "qed"),
    ("raw", "", "raw"),
]


@pytest.mark.parametrize(("fmt", "options", "expected"), QEMU_IMAGES)
def test_every_format_is_detected_by_content(
    tmp_path: Path, fmt: str, options: str, expected: str
) -> None:
    image = _qemu_image(tmp_path / "disk", fmt, options)
    assert detect_format(image) == expected


@pytest.mark.parametrize(
    ("fmt", "name", "expected"),
    [
        ("qcow2", "disk.img", "qcow2"),
        ("qcow2", "disk.vhdx", "qcow2"),
        ("vhdx", "d.qcow2", "vhdx"),
        ("vmdk", "disk.raw", "vmdk"),
        ("raw", "disk.vmdk", "raw"),
        ("raw", "disk.qcow2", "raw"),
    ],
)
def test_the_extension_is_never_trusted(tmp_path: Path, fmt: str, name: str, expected: str) -> None:
    assert detect_format(_qemu_image(tmp_path / name, fmt)) == expected


@pytest.mark.parametrize(
    "content",
    [
        b"",  # an empty disk is a (zero-length) raw disk
        b"QFI",  # shorter than any magic
        bytes(SIZE),
        random.Random(1).randbytes(SIZE),
        bytes(64) + b"\x7f\x10\xda",  # a truncated VDI signature
    ],
    ids=["empty", "short", "zeros", "random", "short-vdi"],
)
def test_anything_else_is_raw(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "disk.qcow2"
    path.write_bytes(content)
    assert detect_format(path) == "raw"


def test_a_broken_vhdx_is_a_vhdx_and_fails_to_open(tmp_path: Path) -> None:
    """The identifier decides; a damaged VHDX is reported, never backed up as a raw disk."""
    path = tmp_path / "disk.raw"
    path.write_bytes(b"vhdxfile" + bytes(100))
    assert detect_format(path) == "vhdx"
    with pytest.raises(ImageFormatError, match="VHDX"):
        open_disk(path)


def test_missing_path_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        detect_format(tmp_path / "missing.vhdx")
    with pytest.raises(SourceError, match="no such file"):
        open_disk(tmp_path / "missing.vhdx")


def test_directory_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is a directory"):
        detect_format(tmp_path)


@pytest.mark.parametrize(
    ("fmt", "reader_type"),
    [
        ("raw", RawImageReader),
        ("vhdx", VhdxReader),
        ("qcow2", QemuImageReader),
        ("vmdk", QemuImageReader),
        ("vdi", QemuImageReader),
        ("vpc", QemuImageReader),
    ],
)
def test_open_disk_opens_the_detected_format(tmp_path: Path, fmt: str, reader_type: type) -> None:
    image = _qemu_image(tmp_path / "disk.img", fmt)
    with open_disk(image) as reader:
        assert isinstance(reader, reader_type)
        assert reader.read(4096, 8192) == b"\x5a" * 8192
        assert reader.read(0, 4096) == bytes(4096)


def test_open_disk_format_overrides_detection(tmp_path: Path) -> None:
    image = _qemu_image(tmp_path / "disk.img", "qcow2")
    with open_disk(image, "raw") as reader:
        assert isinstance(reader, RawImageReader)
        assert reader.read(0, 4) == b"QFI\xfb"
