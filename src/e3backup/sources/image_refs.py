"""Which other host files an image's header names: backing files, parents, data files, extents.

A guest owns every byte of its raw disk, so it can write any header into it: a raw disk probed
as qcow2 whose backing file is /etc/shadow would make a backup read the host file (qemu's own
rule: probing raw is unsafe). Only a probed or unfollowed image is checked here; the readers
never follow what this finds unless the user asked for it (`--follow-backing`).

Read straight from the headers with bounded reads, so checking a hostile file costs little.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable
from pathlib import Path

from e3backup.core.errors import ImageFormatError, SourceError
from e3backup.sources.vhdx.layout import load_layout

_HEAD_BYTES = 64 * 1024  # qcow2 header extensions live in the first cluster
_VMDK_DESCRIPTOR_BYTES = 1024 * 1024  # qemu reads at most 1 MiB of a descriptor
_QCOW2_INCOMPAT_DATA_FILE = 1 << 2
_QCOW2_EXT_DATA_FILE = 0x44415441
_QED_F_BACKING_FILE = 0x01
_VHD_DIFFERENCING = 4
_VMDK_EXTENT = re.compile(rb'^\s*(?:RW|RDONLY|NOACCESS)\s+\d+\s+\w+\s+"([^"]*)"', re.MULTILINE)
_VMDK_PARENT = re.compile(rb'parentFileNameHint\s*=\s*"([^"]*)"')

_ReadAt = Callable[[int, int], bytes]


def external_files(path: Path, image_format: str) -> list[str]:
    """What the image at `path` names outside itself, one description each ([] for none)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size

            def read_at(offset: int, length: int) -> bytes:
                return os.pread(f.fileno(), length, offset) if offset < size else b""

            return _by_format(image_format, read_at, size, str(path))
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _by_format(fmt: str, read_at: _ReadAt, size: int, name: str) -> list[str]:
    head = read_at(0, _HEAD_BYTES).ljust(512, b"\0")  # short files: fields read as zero
    if fmt == "qcow2":
        return _qcow2(head)
    if fmt == "qed":
        return _qed(head)
    if fmt == "vmdk":
        return _vmdk(read_at)
    if fmt == "vpc":
        return _vpc(read_at(0, 512), read_at(max(size - 512, 0), 512))
    if fmt == "vhdx":
        return _vhdx(read_at, size, name)
    return []  # raw and VDI (qemu opens no differencing VDI) name nothing


def _name(raw: bytes) -> str:
    """A file name from a header, shown with repr so control characters cannot hide."""
    return repr(raw[:256].decode("utf-8", "replace"))


def _qcow2(head: bytes) -> list[str]:
    found = []
    backing_offset, backing_size = struct.unpack_from(">QI", head, 8)
    if backing_offset or backing_size:
        raw = head[backing_offset : backing_offset + backing_size] if backing_size < 4096 else b""
        found.append(f"backing file {_name(raw)}")
    version = struct.unpack_from(">I", head, 4)[0]
    if version >= 3 and len(head) >= 104:
        incompatible = struct.unpack_from(">Q", head, 72)[0]
        if incompatible & _QCOW2_INCOMPAT_DATA_FILE:
            header_length = struct.unpack_from(">I", head, 100)[0]
            found.append(f"external data file {_qcow2_data_file(head, header_length)}")
    return found


def _qcow2_data_file(head: bytes, pos: int) -> str:
    while pos + 8 <= len(head):
        ext_type, length = struct.unpack_from(">II", head, pos)
        if ext_type == 0:
            break
        if ext_type == _QCOW2_EXT_DATA_FILE:
            return _name(head[pos + 8 : pos + 8 + length])
        pos += 8 + (length + 7) // 8 * 8
    return "(named by the image's options)"


def _qed(head: bytes) -> list[str]:
    features = struct.unpack_from("<Q", head, 16)[0]
    if not features & _QED_F_BACKING_FILE:
        return []
    offset, length = struct.unpack_from("<II", head, 56)
    return [f"backing file {_name(head[offset : offset + min(length, 4096)])}"]


def _vmdk(read_at: _ReadAt) -> list[str]:
    """A text descriptor keeps all its data in other files; a sparse extent may name a parent,
    and one with capacity 0 is opened through the descriptor embedded in it (qemu's rules)."""
    head = read_at(0, 512).ljust(512, b"\0")
    if head[:4] in (b"KDMV", b"COWD"):
        texts = [read_at(512, 20 * 512)]  # where qemu looks for parentFileNameHint
        if head[:4] == b"KDMV":
            capacity, _, desc_sector, desc_sectors = struct.unpack_from("<QQQQ", head, 12)
            if capacity == 0 and desc_sector:
                descriptor = read_at(desc_sector * 512, min(desc_sectors * 512, 1 << 20))
                texts.append(descriptor)
                extents = [m.group(1) for m in _VMDK_EXTENT.finditer(_text(descriptor))]
                return _vmdk_parents(texts) + [f"extent {_name(e)}" for e in extents or [b""]]
        return _vmdk_parents(texts)
    descriptor = _text(read_at(0, _VMDK_DESCRIPTOR_BYTES))
    extents = [m.group(1) for m in _VMDK_EXTENT.finditer(descriptor)]
    return _vmdk_parents([descriptor]) + [f"extent {_name(e)}" for e in extents or [b""]]


def _text(raw: bytes) -> bytes:
    return raw.split(b"\0", 1)[0]


def _vmdk_parents(texts: list[bytes]) -> list[str]:
    found = []
    for text in texts:
        match = _VMDK_PARENT.search(_text(text))
        if match:
            found.append(f"parent disk {_name(match.group(1))}")
        elif b"parentFileNameHint" in text:
            found.append("parent disk (parentFileNameHint)")
    return found[:1]


def _vpc(head: bytes, tail: bytes) -> list[str]:
    for footer in (head, tail):
        is_footer = footer.startswith(b"conectix") and len(footer) >= 64
        if is_footer and struct.unpack_from(">I", footer, 60)[0] == _VHD_DIFFERENCING:
            return ["parent disk (a differencing VHD)"]
    return []


def _vhdx(read_at: _ReadAt, size: int, name: str) -> list[str]:
    def exact(offset: int, length: int) -> bytes:
        data = read_at(offset, length)
        if len(data) != length:
            raise ImageFormatError(f"{name}: not a valid VHDX file: truncated")
        return data

    layout = load_layout(exact, size, name)
    if not layout.has_parent:
        return []
    locator = layout.parent_locator
    keys = ("absolute_win32_path", "relative_path", "volume_path")
    hint = next((locator[k] for k in keys if k in locator), "")
    return [f"parent disk {_name(hint.encode())}"]
