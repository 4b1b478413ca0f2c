"""GPT and MBR layouts parsed from disks made by sgdisk / sfdisk, checked against `sfdisk --json`;
a disk rebuilt from the planned metadata alone must hold the same table (`sgdisk -v` clean)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from e3backup.sources.image import RawImageReader
from e3backup.sources.windows.physical_disk import LayoutError, disk_read_plan, parse_layout
from e3backup.sources.windows.plan import merge_extents

MiB = 1024 * 1024
SS = 512


def sh(*argv: str, stdin: str | None = None) -> str:
    return subprocess.run(
        argv, input=stdin, check=True, capture_output=True, text=True, timeout=60
    ).stdout


def blank(path: Path, size: int = 64 * MiB) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def gpt_disk(path: Path) -> Path:
    sh("sgdisk", "-n", "1:2048:+20M", "-t", "1:0700", "-c", "1:Data", "-n", "2:0:+10M",
       "-t", "2:8300", "-c", "2:linux \u00e9t\u00e9", "-n", "3:0:+1M", "-t", "3:EF00",
       str(blank(path)))  # fmt: skip
    return path


def mbr_disk(path: Path) -> Path:
    script = (
        "label: dos\nstart=2048, size=20480, type=7\nstart=22528, size=100000, type=5\n"
        "start=24576, size=8192, type=83\nstart=34816, size=8192, type=b\n"
        "start=122880, size=4096, type=c\n"
    )
    sh("sfdisk", "-q", str(blank(path)), stdin=script)
    return path


def sfdisk_json(path: Path) -> dict[str, Any]:
    """The table, device names cut to the partition number."""
    table = dict(json.loads(sh("sfdisk", "--json", str(path)))["partitiontable"])
    table["device"] = ""
    for part in table["partitions"]:
        part["node"] = int(part["node"].removeprefix(str(path)))
    return table


def layout_of(path: Path) -> Any:
    with RawImageReader.open(path) as reader:
        return parse_layout(reader.read, reader.size_bytes)


def copy_ranges(src: Path, dst: Path, extents: Any) -> None:
    with open(src, "rb") as s, open(dst, "r+b") as d:
        for offset, length in extents:
            s.seek(offset)
            d.seek(offset)
            d.write(s.read(length))


@pytest.mark.parametrize("make", [gpt_disk, mbr_disk])
def test_partitions_match_sfdisk(tmp_path: Path, make: Any) -> None:
    disk = make(tmp_path / "disk.img")
    table = sfdisk_json(disk)
    layout = layout_of(disk)
    assert layout.style == table["label"].replace("dos", "mbr")
    expected = [
        (p["node"], p["start"] * SS, p["size"] * SS, p["type"].upper())
        for p in table["partitions"]
        if p["type"] not in ("5", "f", "85")  # the extended container is not data
    ]
    got = [
        (p.number, p.start, p.length, f"{int(p.type, 16):X}" if p.type[:2] == "0x" else p.type)
        for p in layout.partitions
    ]
    assert sorted(got) == sorted(expected)
    if layout.style == "gpt":
        names = [p.get("name", "") for p in table["partitions"]]
        assert [p.name for p in sorted(layout.partitions, key=lambda p: p.number)] == names


@pytest.mark.parametrize("make", [gpt_disk, mbr_disk])
def test_metadata_alone_rebuilds_the_table(tmp_path: Path, make: Any) -> None:
    disk = make(tmp_path / "disk.img")
    layout = layout_of(disk)
    copy = blank(tmp_path / "copy.img")
    copy_ranges(disk, copy, layout.metadata)
    assert sfdisk_json(copy) == sfdisk_json(disk)
    if layout.style == "gpt":
        assert "No problems found" in sh("sgdisk", "-v", str(copy))
        tail = layout.metadata[-1]
        assert tail[0] + tail[1] == 64 * MiB and tail[1] >= 33 * SS  # backup entries + header
    for offset, length in layout.metadata:  # metadata never overlaps a partition
        assert all(
            offset + length <= p.start or offset >= p.start + p.length for p in layout.partitions
        )


def test_damaged_primary_gpt_header_uses_the_backup(tmp_path: Path) -> None:
    disk = gpt_disk(tmp_path / "disk.img")
    with open(disk, "r+b") as f:
        f.seek(SS + 40)  # FirstUsableLBA, inside the header's CRC32
        f.write(b"\x01")
    verify = subprocess.run(["sgdisk", "-v", str(disk)], capture_output=True, text=True)
    assert "Main header: ERROR" in verify.stdout + verify.stderr  # sgdisk agrees it is damaged
    assert [p.number for p in layout_of(disk).partitions] == [1, 2, 3]


def test_damaged_partition_entries_fall_back_to_a_full_read(tmp_path: Path) -> None:
    disk = gpt_disk(tmp_path / "disk.img")
    with open(disk, "r+b") as f:
        f.seek(2 * SS + 40)  # inside entry 1, covered by the entries CRC32
        f.write(b"\x07")
    with pytest.raises(LayoutError, match="CRC32"):
        layout_of(disk)
    with RawImageReader.open(disk) as reader:
        plan, layout = disk_read_plan(reader)
    assert layout is None and plan.mode == "full" and "CRC32" in plan.reason
    assert plan.extents == ((0, 64 * MiB),)


def test_disk_without_a_table(tmp_path: Path) -> None:
    bare = blank(tmp_path / "bare.img", 16 * MiB)
    sh("mkntfs", "-F", "-Q", "-q", str(bare))  # a volume straight on the disk: boot sector, 55AA
    assert layout_of(bare) is None
    with RawImageReader.open(bare) as reader:
        plan, _ = disk_read_plan(reader)
    assert plan.mode == "full" and "no partition table" in plan.reason


def test_partition_outside_the_disk_is_refused(tmp_path: Path) -> None:
    disk = mbr_disk(tmp_path / "disk.img")
    with open(disk, "r+b") as f:
        f.truncate(32 * MiB)  # the table now points past the end
    with pytest.raises(LayoutError, match="outside the disk"):
        layout_of(disk)


def test_plan_is_metadata_plus_partitions_without_bitmaps(tmp_path: Path) -> None:
    disk = mbr_disk(tmp_path / "disk.img")
    with RawImageReader.open(disk) as reader:
        plan, layout = disk_read_plan(reader)
    assert layout is not None and plan.mode == "disk-layout" and plan.reason == ""
    parts = [(p.start, p.length) for p in layout.partitions]
    assert plan.extents == merge_extents([*layout.metadata, *parts])
    assert plan.planned_bytes < 64 * MiB  # gaps between partitions are not read
