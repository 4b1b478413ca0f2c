"""NTFS read plans from the volume bitmap: only allocated clusters are read.

`FSCTL_GET_VOLUME_BITMAP` takes `STARTING_LCN_INPUT_BUFFER {LONGLONG StartingLcn}` and answers
`VOLUME_BITMAP_BUFFER {LONGLONG StartingLcn; LONGLONG BitmapSize; BYTE Buffer[]}`: StartingLcn
rounded down to a multiple of 8, BitmapSize the clusters from there to the end of the volume,
one bit per cluster (LSB first). When the buffer is too small the call fills it and fails with
ERROR_MORE_DATA; the caller asks again from the next cluster. The cluster size comes from the
NTFS boot sector, cross-checked with `FSCTL_GET_NTFS_VOLUME_DATA` when that answers.

The ioctl is injected (`Ioctl`): `winapi` issues the real DeviceIoControl on Windows; tests
answer with the bytes Windows would return, built from a real NTFS image's own `$Bitmap`.
Anything that makes the bitmap unusable yields a full read plan with the reason
(DISK_IMAGE_READ_PLAN_FALLBACK).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from e3backup.sources.windows.plan import Extent, ReadPlan, merge_extents

FSCTL_GET_NTFS_VOLUME_DATA = 0x00090064
FSCTL_GET_VOLUME_BITMAP = 0x0009006F
ERROR_MORE_DATA = 234
BITMAP_OUT_BYTES = 1 << 20  # 8 Mi clusters (32 GiB at 4 KiB) per call
NTFS_VOLUME_DATA_BYTES = 96
BOOT_REGION_BYTES = 8192  # $Boot: always read, whatever the bitmap says


class Ioctl(Protocol):
    def __call__(self, code: int, in_buffer: bytes, out_size: int) -> tuple[bytes, int]:
        """DeviceIoControl: (bytes returned, 0 or ERROR_MORE_DATA); OSError on other errors."""
        ...


class BitmapError(Exception):
    """The ioctl's answer makes no sense (short, wrong start, no progress)."""


@dataclass(frozen=True)
class NtfsGeometry:
    bytes_per_sector: int
    cluster_size: int
    total_sectors: int

    @property
    def cluster_count(self) -> int:
        return self.total_sectors * self.bytes_per_sector // self.cluster_size


def parse_ntfs_boot_sector(sector: bytes) -> NtfsGeometry | None:
    """The geometry in an NTFS boot sector, or None when `sector` is not one."""
    if len(sector) < 512 or sector[3:11] != b"NTFS    " or sector[510:512] != b"\x55\xaa":
        return None
    bytes_per_sector = struct.unpack_from("<H", sector, 0x0B)[0]
    raw = sector[0x0D]
    sectors_per_cluster = raw if raw <= 0x80 else 1 << (256 - raw)  # large clusters: 2^-n
    total_sectors = struct.unpack_from("<Q", sector, 0x28)[0]
    if bytes_per_sector not in (512, 1024, 2048, 4096) or sectors_per_cluster & (
        sectors_per_cluster - 1
    ):
        return None
    cluster_size = bytes_per_sector * sectors_per_cluster
    if not total_sectors or cluster_size > 2 * 1024 * 1024:
        return None
    return NtfsGeometry(bytes_per_sector, cluster_size, total_sectors)


def parse_ntfs_volume_data(out: bytes) -> NtfsGeometry:
    """NTFS_VOLUME_DATA_BUFFER: NumberSectors @8, BytesPerSector @40, BytesPerCluster @44."""
    if len(out) < NTFS_VOLUME_DATA_BYTES:
        raise BitmapError(f"NTFS_VOLUME_DATA_BUFFER too short ({len(out)} bytes)")
    sectors = struct.unpack_from("<q", out, 8)[0]
    per_sector, per_cluster = struct.unpack_from("<II", out, 40)
    if sectors <= 0 or not per_sector or not per_cluster or per_cluster % per_sector:
        raise BitmapError("NTFS_VOLUME_DATA_BUFFER holds an impossible geometry")
    return NtfsGeometry(per_sector, per_cluster, sectors)


@dataclass(frozen=True)
class VolumeBitmap:
    total_clusters: int
    bits: bytes  # bit n of byte k: cluster 8k+n; padding past total_clusters ignored

    def allocated_runs(self) -> Iterator[tuple[int, int]]:
        """(first cluster, count) of every run of allocated clusters, ascending."""
        pending: list[int] | None = None
        for lcn, count in _raw_runs(self.bits):
            count = min(count, self.total_clusters - lcn)
            if count <= 0:
                break
            if pending and pending[0] + pending[1] == lcn:
                pending[1] += count
                continue
            if pending:
                yield pending[0], pending[1]
            pending = [lcn, count]
        if pending:
            yield pending[0], pending[1]

    def allocated_clusters(self) -> int:
        return sum(count for _, count in self.allocated_runs())


_NONZERO = re.compile(rb"[^\x00]+")
_FULL_OR_BYTE = re.compile(rb"\xff+|[^\xff]")


def _byte_runs(value: int) -> tuple[tuple[int, int], ...]:
    runs, bit = [], 0
    while bit < 8:
        if value >> bit & 1:
            start = bit
            while bit < 8 and value >> bit & 1:
                bit += 1
            runs.append((start, bit - start))
        bit += 1
    return tuple(runs)


_BYTE_RUNS = tuple(_byte_runs(v) for v in range(256))


def _raw_runs(bits: bytes) -> Iterator[tuple[int, int]]:
    """Runs of set bits, not yet joined across bytes; zero and 0xff stretches at C speed."""
    for span in _NONZERO.finditer(bits):
        for part in _FULL_OR_BYTE.finditer(bits, span.start(), span.end()):
            start = part.start()
            if bits[start] == 0xFF:
                yield start * 8, (part.end() - start) * 8
            else:
                for bit, count in _BYTE_RUNS[bits[start]]:
                    yield start * 8 + bit, count


def read_volume_bitmap(ioctl: Ioctl, out_size: int = BITMAP_OUT_BYTES) -> VolumeBitmap:
    """The whole bitmap, asking again from the next cluster while the answer is ERROR_MORE_DATA."""
    lcn, total, parts = 0, -1, []
    while True:
        out, error = ioctl(FSCTL_GET_VOLUME_BITMAP, struct.pack("<q", lcn), out_size)
        if len(out) < 16:
            raise BitmapError(f"VOLUME_BITMAP_BUFFER too short ({len(out)} bytes)")
        start, size = struct.unpack_from("<qq", out)
        if start > lcn or start % 8 or lcn - start >= 8:
            raise BitmapError(f"asked from cluster {lcn}, the bitmap starts at {start}")
        if total < 0:
            total = start + size
        elif start + size != total:
            raise BitmapError("the volume's cluster count changed between calls")
        data = out[16 : 16 + -(-(total - start) // 8)]
        parts.append(data)
        lcn = start + len(data) * 8
        if error != ERROR_MORE_DATA or lcn >= total:
            break
        if not data:
            raise BitmapError("ERROR_MORE_DATA without any bitmap bytes")
    if lcn < total:
        raise BitmapError(f"the bitmap covers {lcn} of {total} clusters")
    return VolumeBitmap(total, b"".join(parts))


def bitmap_extents(bitmap: VolumeBitmap, cluster_size: int) -> list[Extent]:
    return [(lcn * cluster_size, count * cluster_size) for lcn, count in bitmap.allocated_runs()]


def volume_read_plan(read_boot: bytes, size_bytes: int, ioctl: Ioctl | None) -> ReadPlan:
    """The plan for an NTFS volume of `size_bytes` whose first sector is `read_boot`: allocated
    clusters, the boot region and whatever lies past the last cluster (the backup boot sector);
    a full read with the reason when the bitmap cannot be had or trusted."""
    geometry = parse_ntfs_boot_sector(read_boot)
    if geometry is None:
        return ReadPlan.full(size_bytes, "not an NTFS volume: full read")
    if ioctl is None:
        return ReadPlan.full(size_bytes, "no volume bitmap for this source: full read")
    try:
        reported = _volume_data(ioctl)
        if reported is not None and reported.cluster_size != geometry.cluster_size:
            raise BitmapError(
                f"cluster size {reported.cluster_size} (FSCTL_GET_NTFS_VOLUME_DATA) differs "
                f"from the boot sector's {geometry.cluster_size}"
            )
        bitmap = read_volume_bitmap(ioctl)
    except (OSError, BitmapError) as exc:
        return ReadPlan.full(size_bytes, f"FSCTL_GET_VOLUME_BITMAP unusable ({exc}): full read")
    clusters_end = bitmap.total_clusters * geometry.cluster_size
    if bitmap.total_clusters != geometry.cluster_count or clusters_end > size_bytes:
        reason = (
            f"volume bitmap covers {bitmap.total_clusters} clusters, the boot sector says "
            f"{geometry.cluster_count} on {size_bytes} bytes: full read"
        )
        return ReadPlan.full(size_bytes, reason)
    extents = bitmap_extents(bitmap, geometry.cluster_size)
    extents += [(0, BOOT_REGION_BYTES), (clusters_end, size_bytes - clusters_end)]
    return ReadPlan(merge_extents(extents, size_bytes), "ntfs-bitmap")


def _volume_data(ioctl: Ioctl) -> NtfsGeometry | None:
    """FSCTL_GET_NTFS_VOLUME_DATA's geometry, or None where the call is not answered."""
    try:
        out, _ = ioctl(FSCTL_GET_NTFS_VOLUME_DATA, b"", NTFS_VOLUME_DATA_BYTES)
    except OSError:
        return None
    return parse_ntfs_volume_data(out)
