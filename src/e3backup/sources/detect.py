"""Which format is this disk? Decided by content, never by the file name; and open it."""

from __future__ import annotations

import os
from pathlib import Path

from e3backup.core import platform_io
from e3backup.core.errors import SourceError
from e3backup.sources.image import RawImageReader
from e3backup.sources.qemu_image import QemuImageReader
from e3backup.sources.vhdx import VhdxReader, looks_like_vhdx

RAW = "raw"
VHDX = "vhdx"

# (offset, magic, qemu format name); the first match wins.
_QEMU_MAGICS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"QFI\xfb", "qcow2"),
    (0, b"KDMV", "vmdk"),  # sparse VMDK extent
    (0, b"# Disk DescriptorFile", "vmdk"),  # VMDK text descriptor
    (0, b"COWD", "vmdk"),  # ESX sparse
    (64, b"\x7f\x10\xda\xbe", "vdi"),
    (0, b"QED\x00", "qed"),
)
_VHD_FOOTER = b"conectix"


def detect_format(path: Path) -> str:
    """'raw', 'vhdx', or a qemu format name ('qcow2', 'vmdk', 'vdi', 'vpc', 'qed')."""
    path = Path(path)
    if platform_io.is_block_device(path):
        return RAW
    try:
        with open(path, "rb") as f:
            head = f.read(512)
            size = os.fstat(f.fileno()).st_size
            tail = b""
            if size >= 512:
                f.seek(size - 512)
                tail = f.read(512)
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file or device") from None
    except IsADirectoryError:
        raise SourceError(f"{path} is a directory, not a disk image") from None
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if looks_like_vhdx(head):
        return VHDX
    for offset, magic, name in _QEMU_MAGICS:
        if head[offset : offset + len(magic)] == magic:
            return name
    if head.startswith(_VHD_FOOTER) or tail.startswith(_VHD_FOOTER):
        return "vpc"  # VHD (dynamic disks carry a footer copy at offset 0)
    return RAW


DiskImageReader = RawImageReader | VhdxReader | QemuImageReader


def open_disk(path: Path, image_format: str | None = None) -> DiskImageReader:
    """Open any supported disk for reading; `image_format` overrides detection."""
    image_format = image_format or detect_format(path)
    if image_format == RAW:
        return RawImageReader.open(path)
    if image_format == VHDX:
        return VhdxReader.open(path)
    return QemuImageReader.open(path, image_format)
