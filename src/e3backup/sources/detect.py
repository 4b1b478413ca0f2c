"""Which format is this disk? Decided by content, never by the file name; and open it.

A probed image is read on its own: one that names other files (backing file, parent disk,
external data file, VMDK extents) is refused, since a guest can write such a header into its
raw disk. Following them needs the format stated and `follow_backing`.
"""

from __future__ import annotations

import os
from pathlib import Path

from e3backup.core import platform_io
from e3backup.core.errors import SourceError, UsageError
from e3backup.sources.image import RawImageReader
from e3backup.sources.image_refs import external_files
from e3backup.sources.qemu_image import QemuImageReader
from e3backup.sources.vhdx import VhdxReader, looks_like_vhdx

RAW = "raw"
VHDX = "vhdx"
FORMATS = (RAW, VHDX, "qcow2", "vmdk", "vdi", "vpc", "qed")

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


class ExternalFileRefused(SourceError):
    """The image names another file and following it was not asked for."""


def open_disk(
    path: Path, image_format: str | None = None, follow_backing: bool = False
) -> DiskImageReader:
    """Open any supported disk for reading.

    `image_format` states the format (None: detect it from the content). Files the image
    names are followed only with `follow_backing`, which needs the format stated.
    """
    if image_format is not None and image_format not in FORMATS:
        raise UsageError(f"unknown image format {image_format!r} (one of {', '.join(FORMATS)})")
    if follow_backing and image_format is None:
        raise UsageError("--follow-backing needs --format: a probed image never follows a file")
    fmt = image_format or detect_format(path)
    if not follow_backing:
        _refuse_external_files(Path(path), fmt, probed=image_format is None)
    if fmt == RAW:
        return RawImageReader.open(path)
    if fmt == VHDX:
        return VhdxReader.open(path, follow_parents=follow_backing)
    return QemuImageReader.open(path, fmt, follow_backing=follow_backing)


def _refuse_external_files(path: Path, fmt: str, probed: bool) -> None:
    found = external_files(path, fmt) if fmt != RAW else []
    if not found:
        return
    if probed:
        raise ExternalFileRefused(
            f"{path} looks like a {fmt} image that names {found[0]}; a detected format never "
            "follows another file (a guest can write such a header into its raw disk). If it "
            f"is a {fmt} image you trust: --format {fmt} --follow-backing; to back up the "
            "bytes as they are: --format raw"
        )
    raise ExternalFileRefused(
        f"{path}: the {fmt} image names {found[0]}; add --follow-backing to read through it"
    )
