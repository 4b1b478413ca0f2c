"""The NTFS volume-bitmap read plan on a real volume (mkntfs + ntfs-3g), with the ioctl's answers
built from its own $Bitmap: the ERROR_MORE_DATA loop, bad answers → full read with the reason,
the boot-sector geometry against ntfsinfo, and the sector-error reader's narrowing."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from e3backup.core.errors import SourceError
from e3backup.sources.image import RawImageReader
from e3backup.sources.windows.plan import PlannedReader, ReadPlan, align_extents, merge_extents
from e3backup.sources.windows.read_errors import (
    ERROR_SECTOR_NOT_FOUND,
    DeviceReadError,
    RecoveringReader,
)
from e3backup.sources.windows.volume_bitmap import (
    FSCTL_GET_VOLUME_BITMAP,
    BitmapError,
    VolumeBitmap,
    parse_ntfs_boot_sector,
    read_volume_bitmap,
    volume_read_plan,
)
from fixtures.ntfs_volume import BitmapIoctl, MiB, NtfsVolume, make_ntfs, ntfs_bitmap

SIZE = 40 * MiB


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> NtfsVolume:
    return make_ntfs(tmp_path_factory.mktemp("ntfs") / "vol.img", SIZE, seed=21)


def test_boot_sector_geometry_matches_ntfsinfo(volume: NtfsVolume) -> None:
    geometry = parse_ntfs_boot_sector(volume.path.read_bytes()[:512])
    assert geometry is not None
    assert geometry.cluster_size == volume.info["cluster_size"]
    assert geometry.bytes_per_sector == volume.info["bytes_per_sector"]
    assert geometry.cluster_count == volume.info["clusters"]
    assert parse_ntfs_boot_sector(bytes(512)) is None


@pytest.mark.parametrize("out_size", [16 + 1, 16 + 64, 16 + 1000, 1 << 20])
def test_more_data_loop_reads_the_same_bitmap(volume: NtfsVolume, out_size: int) -> None:
    ioctl = BitmapIoctl(volume.path)
    bitmap = read_volume_bitmap(ioctl, out_size)
    bitmap_bytes = (volume.info["clusters"] + 7) // 8
    expected_calls = (bitmap_bytes + out_size - 17) // (out_size - 16)
    assert ioctl.calls == expected_calls
    used = volume.info["clusters"] - volume.info["free_clusters"]
    assert bitmap.total_clusters == volume.info["clusters"]
    assert bitmap.allocated_clusters() == used  # ntfscluster agrees
    raw = ntfs_bitmap(volume.path)
    naive = [n for n in range(bitmap.total_clusters) if raw[n // 8] >> (n % 8) & 1]
    runs = [n for lcn, count in bitmap.allocated_runs() for n in range(lcn, lcn + count)]
    assert runs == naive


def test_runs_cross_bytes_and_ignore_padding() -> None:
    bits = bytes([0b1000_0000, 0xFF, 0b0000_0011, 0, 0xF0, 0xFF])
    assert list(VolumeBitmap(44, bits).allocated_runs()) == [(7, 11), (36, 8)]


class Misbehaving(BitmapIoctl):
    def __init__(self, volume: Path, how: str) -> None:
        super().__init__(volume)
        self.how = how

    def __call__(self, code: int, in_buffer: bytes, out_size: int) -> tuple[bytes, int]:
        out, error = super().__call__(code, in_buffer, 16 + 64 if self.how != "short" else out_size)
        if code != FSCTL_GET_VOLUME_BITMAP:
            if self.how == "cluster-size":
                out = out[:44] + struct.pack("<I", 8192) + out[48:]
            return out, error
        if self.how == "wrong-start":
            out = struct.pack("<q", 800) + out[8:]
        elif self.how == "no-progress":
            out = out[:16]
        elif self.how == "grows" and self.calls > 1:
            out = out[:8] + struct.pack("<q", struct.unpack_from("<q", out, 8)[0] + 8) + out[16:]
        elif self.how == "short":
            out, error = out[: 16 + 10], 0
        return out, error


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("wrong-start", "bitmap starts at 800"),
        ("no-progress", "without any bitmap bytes"),
        ("grows", "cluster count changed"),
        ("short", "the bitmap covers 80 of"),
        ("cluster-size", "cluster size 8192"),
    ],
)
def test_unusable_bitmap_answers_fall_back_to_a_full_read(
    volume: NtfsVolume, how: str, reason: str
) -> None:
    plan = volume_read_plan(volume.path.read_bytes()[:512], SIZE, Misbehaving(volume.path, how))
    assert plan.mode == "full" and reason in plan.reason and plan.extents == ((0, SIZE),)
    if how != "cluster-size":
        with pytest.raises(BitmapError):
            read_volume_bitmap(Misbehaving(volume.path, how))


def test_ioctl_refused_falls_back(volume: NtfsVolume) -> None:
    boot = volume.path.read_bytes()[:512]
    plan = volume_read_plan(boot, SIZE, BitmapIoctl(volume.path, fail_with=1))
    assert plan.mode == "full" and "FSCTL_GET_VOLUME_BITMAP unusable" in plan.reason
    assert "no volume bitmap" in volume_read_plan(boot, SIZE, None).reason


def test_plan_covers_allocated_clusters_boot_and_tail(volume: NtfsVolume) -> None:
    plan = volume_read_plan(volume.path.read_bytes()[:512], SIZE, BitmapIoctl(volume.path))
    info = volume.info
    used = (info["clusters"] - info["free_clusters"]) * info["cluster_size"]
    tail = SIZE - info["clusters"] * info["cluster_size"]
    assert plan.mode == "ntfs-bitmap" and plan.planned_bytes == used + tail
    assert plan.extents[-1][0] + plan.extents[-1][1] == SIZE  # backup boot sector included
    aligned = align_extents(plan.extents, MiB, SIZE)
    assert all(o % MiB == 0 and (o + n) % MiB == 0 for o, n in aligned)


def test_planned_reader_reads_only_the_plan() -> None:
    data = random.Random(1).randbytes(64 * 1024)

    reads: list[tuple[int, int]] = []

    class Mem:
        size_bytes = len(data)

        def allocated_extents(self) -> Iterator[tuple[int, int]]:
            yield 0, len(data)

        def read(self, offset: int, length: int) -> bytes:
            reads.append((offset, length))
            return data[offset : offset + length]

        def close(self) -> None:
            pass

    plan = ReadPlan(merge_extents([(4096, 100), (4196, 50), (10_000, 10)]), "ntfs-bitmap")
    reader = PlannedReader(Mem(), plan)
    out = reader.read(4000, 8000)
    expected = bytearray(8000)
    expected[96:246] = data[4096:4246]
    expected[6000:6010] = data[10_000:10_010]
    assert out == bytes(expected) and reads == [(4096, 150), (10_000, 10)]
    assert reader.bytes_read == 160


def test_best_effort_narrows_to_the_bad_sectors(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    data = random.Random(2).randbytes(MiB)
    path.write_bytes(data)
    bad = [(5 * 512, 512), (6 * 512, 512), (700 * 512, 3 * 512)]

    class Faulty(RawImageReader):
        def read(self, offset: int, length: int) -> bytes:
            if any(offset < s + n and s < offset + length for s, n in bad):
                raise DeviceReadError(ERROR_SECTOR_NOT_FOUND, offset, length)
            return super().read(offset, length)

    reader = RecoveringReader(Faulty.open(path), "disk", strict=False)
    out = reader.read(0, MiB)
    assert reader.recovered() == [(5 * 512, 1024), (700 * 512, 1536)]
    expected = bytearray(data)
    for s, n in bad:
        expected[s : s + n] = bytes(n)
    assert out == bytes(expected)
    strict = RecoveringReader(Faulty.open(path), "disk", strict=True)
    with pytest.raises(SourceError, match="bytes 0-1048576"):
        strict.read(0, MiB)
