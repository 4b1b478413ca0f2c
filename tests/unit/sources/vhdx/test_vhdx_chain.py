"""Differencing chains built with VhdxWriter.create_child read as their flattened image."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from vhdx_helpers import MiB, expected_image, get_bat_entry, make_vhdx, rewrite_headers

from e3backup.core.errors import ImageFormatError
from e3backup.sources.vhdx import ParentLink, VhdxReader, VhdxWriter
from e3backup.sources.vhdx import formats as f

SIZE = 12 * MiB + 4096
BASE = {0: b"A" * 3 * MiB, 6 * MiB: os.urandom(MiB), 12 * MiB: b"Z" * 4096}


def _child(path: Path, parent: Path, writes: dict[int, bytes], **kw: object) -> Path:
    with VhdxWriter.create_child(path, parent, **kw) as writer:  # type: ignore[arg-type]
        for offset, data in writes.items():
            writer.write(offset, data)
    return path


def _flatten(*layers: dict[int, bytes]) -> bytes:
    image = bytearray(SIZE)
    for writes in layers:
        for offset, data in writes.items():
            image[offset : offset + len(data)] = data
    return bytes(image)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return make_vhdx(tmp_path / "base.vhdx", SIZE, BASE, block_size=MiB)


def test_child_over_parent_reads_flattened(tmp_path: Path, base: Path) -> None:
    # Sector-sized writes over parent data, a whole child block, zeros that hide parent data.
    top = {
        512: b"c" * 1024,
        2 * MiB: b"d" * 2 * MiB,
        6 * MiB + 4096: bytes(8192),
        9 * MiB: b"e" * 512,
    }
    child = _child(tmp_path / "child.avhdx", base, top)
    with VhdxReader.open(child) as disk:
        assert disk.chain == [child, base]
        assert disk.read(0, SIZE) == _flatten(BASE, top)
        assert list(disk.allocated_extents()) == [
            (0, 4 * MiB),
            (6 * MiB, 4 * MiB),
            (12 * MiB, 4096),
        ]
    states = {get_bat_entry(child, f.payload_bat_index(b, 2048)) & 7 for b in range(7)}
    assert states == {f.PAYLOAD_NOT_PRESENT, f.PAYLOAD_PARTIALLY_PRESENT, f.PAYLOAD_FULLY_PRESENT}


def test_reads_at_odd_offsets_inside_partial_blocks(tmp_path: Path, base: Path) -> None:
    top = {offset: os.urandom(512) for offset in range(0, 2 * MiB, 3 * 512)}
    child = _child(tmp_path / "child.avhdx", base, top)
    image = _flatten(BASE, top)
    with VhdxReader.open(child) as disk:
        for offset, length in [(1, 1), (511, 2), (1000, 70_000), (MiB - 3, 10), (0, 2 * MiB + 5)]:
            assert disk.read(offset, length) == image[offset : offset + length]


def test_three_level_chain_with_different_block_sizes(tmp_path: Path, base: Path) -> None:
    mid = {MiB: b"m" * 4096, 6 * MiB + 512: b"n" * 512}
    top = {MiB + 512: b"t" * 512, 11 * MiB: b"u" * MiB}
    middle = _child(tmp_path / "mid.avhdx", base, mid, block_size=4 * MiB)
    child = _child(tmp_path / "top.avhdx", middle, top, block_size=MiB)
    with VhdxReader.open(child) as disk:
        assert len(disk.chain) == 3
        assert disk.read(0, SIZE) == _flatten(BASE, mid, top)


def test_chain_moved_together_still_resolves(tmp_path: Path, base: Path) -> None:
    top = {0: b"q" * 4096}
    _child(tmp_path / "child.avhdx", base, top)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for name in ("base.vhdx", "child.avhdx"):
        shutil.move(tmp_path / name, moved / name)
    with VhdxReader.open(moved / "child.avhdx") as disk:
        assert disk.read(0, SIZE) == _flatten(BASE, top)


@pytest.mark.parametrize(
    "paths",
    [
        {"relative_path": "..\\disks\\base.vhdx"},
        {"relative_path": ".\\nonexistent\\base.vhdx"},  # falls back to the name beside the child
        {"absolute_win32_path": "C:\\Hyper-V\\Virtual Hard Disks\\base.vhdx"},
        {"volume_path": "\\\\?\\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}\\VMs\\base.vhdx"},
    ],
)
def test_windows_locator_paths(tmp_path: Path, paths: dict[str, str]) -> None:
    disks = tmp_path / "disks"
    disks.mkdir()
    make_vhdx(disks / "base.vhdx", SIZE, BASE, block_size=MiB)
    _child(disks / "child.avhdx", disks / "base.vhdx", {}, locator_paths=paths)
    with VhdxReader.open(disks / "child.avhdx") as disk:
        assert disk.read(0, SIZE) == _flatten(BASE)


def test_absolute_posix_path(tmp_path: Path, base: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    child = _child(other / "c.avhdx", base, {}, locator_paths={"absolute_win32_path": str(base)})
    with VhdxReader.open(child) as disk:
        assert disk.chain == [child, base]


def test_modified_parent_is_refused(tmp_path: Path, base: Path) -> None:
    child = _child(tmp_path / "child.avhdx", base, {0: b"x" * 512})
    rewrite_headers(base, data_write_guid=uuid.uuid4())
    with pytest.raises(ImageFormatError, match="modified after the differencing disk"):
        VhdxReader.open(child)


def test_missing_parent_is_refused(tmp_path: Path, base: Path) -> None:
    child = _child(tmp_path / "child.avhdx", base, {})
    base.unlink()
    with pytest.raises(ImageFormatError, match="parent disk not found"):
        VhdxReader.open(child)


def test_parent_loop_is_refused(tmp_path: Path, base: Path) -> None:
    link = ParentLink(uuid.uuid4(), {"relative_path": "loop.avhdx"})
    with VhdxWriter(tmp_path / "loop.avhdx", SIZE, block_size=MiB, parent=link):
        pass
    with pytest.raises(ImageFormatError, match="loops back"):
        VhdxReader.open(tmp_path / "loop.avhdx")


def test_parent_of_another_size_is_refused(tmp_path: Path, base: Path) -> None:
    with VhdxReader.open(base) as parent:
        link = ParentLink(parent.data_write_guid, {"relative_path": "base.vhdx"})
    with VhdxWriter(tmp_path / "c.avhdx", SIZE + 512, block_size=MiB, parent=link):
        pass
    with pytest.raises(ImageFormatError, match="size"):
        VhdxReader.open(tmp_path / "c.avhdx")


def test_too_deep_chain_is_refused(
    tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from e3backup.sources.vhdx import reader

    parent = base
    for depth in range(4):
        parent = _child(tmp_path / f"c{depth}.avhdx", parent, {})
    monkeypatch.setattr(reader, "MAX_CHAIN_DEPTH", 3)
    with pytest.raises(ImageFormatError, match="deeper than 3"):
        VhdxReader.open(parent)


def test_child_writes_must_be_whole_sectors(tmp_path: Path, base: Path) -> None:
    writer = VhdxWriter.create_child(tmp_path / "c.avhdx", base)
    with pytest.raises(Exception, match="whole sectors"):
        writer.write(1, b"x" * 512)
    writer.abort()


def test_partial_block_without_bitmap_is_refused(tmp_path: Path, base: Path) -> None:
    child = _child(tmp_path / "c.avhdx", base, {0: b"x" * 512}, block_size=MiB)
    ratio = f.chunk_ratio(MiB, 512)
    from vhdx_helpers import set_bat_entry

    set_bat_entry(child, f.bitmap_bat_index(0, ratio), 0)
    with pytest.raises(ImageFormatError, match="without a sector bitmap"):
        VhdxReader.open(child)


def test_expected_image_helper_matches_flatten() -> None:
    assert expected_image(SIZE, BASE) == _flatten(BASE)


def test_a_reader_told_not_to_follow_parents_refuses_a_child(tmp_path: Path, base: Path) -> None:
    child = _child(tmp_path / "child.avhdx", base, {0: b"x" * 512})
    with pytest.raises(ImageFormatError, match="parent is not followed"):
        VhdxReader.open(child, follow_parents=False)
    with VhdxReader.open(base, follow_parents=False) as disk:  # a base disk names nothing
        assert disk.read(0, 4096) == BASE[0][:4096]
