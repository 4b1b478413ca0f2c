"""The Windows disk-image path end to end on Linux: the disk_image handler with the Windows
hooks in place — VSS on recorded exchanges, a real NTFS volume (mkntfs, files written through
ntfs-3g) standing in for the shadow-copy device, the FSCTL_GET_VOLUME_BITMAP answer built from the
volume's own $Bitmap — backed up through the real engine into a real local repository and
restored. Also physical disks by GPT layout and ERROR_SECTOR_NOT_FOUND strict / best effort."""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e3backup.agent import windows_disk
from e3backup.agent.handlers import disk_image
from e3backup.agent.run_context import EngineTask, RunContext
from e3backup.core.cancel import CancelToken
from e3backup.core.errors import SourceError
from e3backup.engines.image_backup import restore_disk
from e3backup.repo.repository import Repository
from e3backup.sources.disk_reader import DiskReader
from e3backup.sources.hypervisors.hyperv.powershell import PowerShell
from e3backup.sources.image import RawImageReader
from e3backup.sources.windows.physical_disk import parse_layout
from e3backup.sources.windows.plan import OffsetView
from e3backup.sources.windows.read_errors import ERROR_SECTOR_NOT_FOUND, DeviceReadError
from e3backup.sources.windows.volume_bitmap import bitmap_extents, read_volume_bitmap
from e3backup.storage.local import LocalBackend
from fixtures.hyperv_host import Replay
from fixtures.ntfs_volume import BitmapIoctl, MiB, NtfsVolume, make_ntfs, ntfs_file, run

VSS = json.loads((Path(__file__).parents[1] / "fixtures/windows/vss.json").read_text())
SHADOW_DEVICE = "\\\\?\\GLOBALROOT\\Device\\HarddiskVolumeShadowCopy7"
VOLUME_SIZE = 96 * MiB
PASSWORD = "windows-disk-pw"


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> NtfsVolume:
    vol = make_ntfs(tmp_path_factory.mktemp("ntfs") / "vol.img", VOLUME_SIZE, seed=3)
    print(f"NTFS files written with {vol.method}")
    return vol


class FaultyDevice:
    """A real file as a device whose reads fail with a Win32 error on chosen byte ranges."""

    def __init__(self, path: Path, bad: list[tuple[int, int]], winerror: int) -> None:
        self.inner = RawImageReader.open(path)
        self.bad, self.winerror = bad, winerror

    @property
    def size_bytes(self) -> int:
        return self.inner.size_bytes

    def allocated_extents(self) -> Iterator[tuple[int, int]]:
        yield 0, self.size_bytes

    def read(self, offset: int, length: int) -> bytes:
        for start, size in self.bad:
            if offset < start + size and start < offset + length:
                raise DeviceReadError(self.winerror, offset, length)
        return self.inner.read(offset, length)

    def close(self) -> None:
        self.inner.close()


@dataclass
class Host:
    transport: Replay
    sent: list[tuple[str, dict[str, Any]]]
    repo_dir: Path

    def ids(self) -> list[str]:
        return [m["message_id"] for kind, m in self.sent if kind == "event"]

    def events(self, message_id: str) -> list[dict[str, Any]]:
        return [m["params"] for k, m in self.sent if k == "event" and m["message_id"] == message_id]

    def repo(self) -> Repository:
        return Repository.open(LocalBackend(self.repo_dir), PASSWORD)

    def restore(self, target: Path) -> bytes:
        repo = self.repo()
        restore_disk(repo, repo.list_snapshots()[-1], None, target)
        return target.read_bytes()


def windows_host(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, scenario: str, devices: dict[str, Any]
) -> Host:
    transport = Replay(copy.deepcopy(VSS["scenarios"][scenario]["exchanges"]))

    def open_device(path: str) -> tuple[DiskReader, Any]:
        if path not in devices:
            raise SourceError(f"{path}: cannot open (Windows error 2)")
        return devices[path]()

    monkeypatch.setattr(windows_disk.HOOKS, "is_windows", lambda: True)
    monkeypatch.setattr(windows_disk.HOOKS, "powershell", lambda: PowerShell(transport))
    monkeypatch.setattr(windows_disk.HOOKS, "open_device", open_device)
    return Host(transport, [], tmp_path / "repo")


def run_job(host: Host, source: str, policy: dict[str, Any] | None = None) -> dict[str, Any]:
    job = {
        "run_id": 41,
        "engine": "disk_image",
        "disk_source_volume": source,
        "dest_type": "local",
        "dest_local_path": str(host.repo_dir),
        "repository_password": PASSWORD,
        "policy_json": policy or {},
    }
    ctx = RunContext(EngineTask("backup", 41, job), host.sent.append, CancelToken())
    return disk_image.run(EngineTask("backup", 41, job), ctx)


def assert_cleanup_registered_and_done(host: Host) -> None:
    registered = [m for k, m in host.sent if k == "cleanup"]
    assert len(registered) == 1 and registered[0]["argv"][0] == "powershell.exe"
    assert [m["id"] for k, m in host.sent if k == "cleanup_done"] == [registered[0]["id"]]


def test_volume_reads_only_allocated_clusters_and_restores_exactly(
    volume: NtfsVolume, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[RawImageReader] = []

    def shadow_device() -> tuple[DiskReader, Any]:
        opened.append(RawImageReader.open(volume.path))
        return opened[-1], BitmapIoctl(volume.path)

    host = windows_host(monkeypatch, tmp_path, "ok", {SHADOW_DEVICE: shadow_device})
    result = run_job(host, "C:")
    assert result["status"] == "success"
    assert host.transport.ops() == ["vss-create", "vss-get", "vss-delete"]
    assert_cleanup_registered_and_done(host)
    assert "DISK_IMAGE_READ_PLAN_FALLBACK" not in host.ids()
    assert {"DISK_IMAGE_STREAM_START", "DISK_IMAGE_STREAM_COMPLETED"} <= set(host.ids())
    assert list(result["disk_manifests_json"]) == ["volume-C"]

    info = volume.info
    allocated = (info["clusters"] - info["free_clusters"]) * info["cluster_size"]  # ntfscluster
    chunk = host.repo().config.chunk_size
    read = opened[0].bytes_read
    assert allocated + chunk < VOLUME_SIZE // 4, "a full read could not pass the bound below"
    assert allocated <= read <= allocated + chunk, (read, allocated)

    source = volume.path.read_bytes()
    restored = host.restore(tmp_path / "restored.img")
    bitmap = read_volume_bitmap(BitmapIoctl(volume.path))
    for offset, length in bitmap_extents(bitmap, info["cluster_size"]):
        assert restored[offset : offset + length] == source[offset : offset + length], offset
    for name, content in volume.files.items():
        assert ntfs_file(tmp_path / "restored.img", name) == content, name
    if volume.deleted:  # a deleted file's stale clusters are on the volume, not in the backup
        sample = volume.deleted[1 * MiB : 1 * MiB + 4096]
        assert sample in source and sample not in restored


def test_unplannable_volume_falls_back_to_a_full_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = tmp_path / "refs.img"  # not NTFS (say ReFS or FAT): no bitmap plan
    raw.write_bytes(random.Random(5).randbytes(6 * MiB))
    devices = {SHADOW_DEVICE: lambda: (RawImageReader.open(raw), None)}
    host = windows_host(monkeypatch, tmp_path, "ok", devices)
    assert run_job(host, "C:")["status"] == "success"
    fallback = host.events("DISK_IMAGE_READ_PLAN_FALLBACK")
    assert len(fallback) == 1 and "not an NTFS volume" in fallback[0]["reason"]
    assert host.restore(tmp_path / "restored.img") == raw.read_bytes()
    assert host.transport.ops()[-1] == "vss-delete"


def big_file_offset(volume: NtfsVolume) -> int:
    data = volume.path.read_bytes()
    offset = data.find(volume.files["/big.bin"][:4096])
    assert offset > 0 and offset % volume.info["cluster_size"] == 0
    return offset


def test_best_effort_zero_fills_unreadable_sectors_and_warns(
    volume: NtfsVolume, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = big_file_offset(volume)
    bad = (start + 2 * MiB + 3 * 512, 2 * 512)
    devices = {
        SHADOW_DEVICE: lambda: (
            FaultyDevice(volume.path, [bad], ERROR_SECTOR_NOT_FOUND),
            BitmapIoctl(volume.path),
        )
    }
    host = windows_host(monkeypatch, tmp_path, "ok", devices)
    assert run_job(host, "C:")["status"] == "success"
    recovered = host.events("DISK_IMAGE_READ_RECOVERED")
    assert [(e["offset"], e["length"]) for e in recovered] == [bad]
    snapshot = host.repo().list_snapshots()[-1]
    assert any(f"bytes {bad[0]}-{bad[0] + bad[1]}" in w for w in snapshot.extra["warnings"])
    restored_path = tmp_path / "restored.img"
    restored = host.restore(restored_path)
    assert restored[bad[0] : bad[0] + bad[1]] == bytes(bad[1])
    expected = bytearray(volume.files["/big.bin"])
    expected[bad[0] - start : bad[0] - start + bad[1]] = bytes(bad[1])
    assert ntfs_file(restored_path, "/big.bin") == bytes(expected)  # everything else kept
    assert ntfs_file(restored_path, "/dir/mid.bin") == volume.files["/dir/mid.bin"]


@pytest.mark.parametrize(
    ("policy", "winerror", "expected"),
    [
        ({"disk_image_strict_read_errors": True}, ERROR_SECTOR_NOT_FOUND, "strict read-error"),
        ({}, 21, "Windows error 21"),  # ERROR_NOT_READY: never zero-filled
    ],
)
def test_strict_mode_and_other_errors_fail_and_delete_the_shadow_copy(
    volume: NtfsVolume,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    policy: dict[str, Any],
    winerror: int,
    expected: str,
) -> None:
    bad = (big_file_offset(volume) + MiB, 512)
    devices = {
        SHADOW_DEVICE: lambda: (
            FaultyDevice(volume.path, [bad], winerror),
            BitmapIoctl(volume.path),
        )
    }
    host = windows_host(monkeypatch, tmp_path, "ok", devices)
    with pytest.raises(SourceError, match=expected) as err:
        run_job(host, "C:", policy)
    if winerror == ERROR_SECTOR_NOT_FOUND:  # the message names a range holding the bad sector
        found = re.search(r"ERROR_SECTOR_NOT_FOUND\) reading bytes (\d+)-(\d+)", str(err.value))
        assert found and int(found[1]) <= bad[0] and bad[0] + bad[1] <= int(found[2])
    assert host.events("DISK_IMAGE_FAILED")
    assert host.transport.ops() == ["vss-create", "vss-get", "vss-delete"]
    assert host.repo().list_snapshots() == []  # nothing half-written is kept


def test_physical_disk_reads_layout_metadata_and_partitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = tmp_path / "disk.img"
    size = 80 * MiB
    with open(disk, "wb") as f:
        f.truncate(size)
    run("sgdisk", "-n", "1:2048:+48M", "-t", "1:0700", "-c", "1:Data", "-n", "2:0:+12M",
        "-t", "2:8300", str(disk))  # fmt: skip
    part1 = make_ntfs(tmp_path / "p1.img", 48 * MiB, seed=9)
    rng = random.Random(11)
    linux = rng.randbytes(12 * MiB)
    junk = rng.randbytes(2 * MiB)  # in the unpartitioned gap after partition 2: never read
    with open(disk, "r+b") as f:
        for offset, data in ((MiB, part1.path.read_bytes()), (49 * MiB, linux), (70 * MiB, junk)):
            f.seek(offset)
            f.write(data)
    opened: list[RawImageReader] = []

    def physical() -> tuple[DiskReader, Any]:
        opened.append(RawImageReader.open(disk))
        return opened[-1], None

    def partition1() -> tuple[DiskReader, Any]:
        reader = RawImageReader.open(disk)
        return OffsetView(reader, MiB, 48 * MiB), BitmapIoctl(part1.path)

    devices = {
        "\\\\.\\PhysicalDrive2": physical,
        "\\\\?\\GLOBALROOT\\Device\\Harddisk2\\Partition1": partition1,
    }
    host = windows_host(monkeypatch, tmp_path, "ok", devices)
    result = run_job(host, "\\\\.\\PhysicalDrive2")
    assert result["status"] == "success" and list(result["disk_manifests_json"]) == [
        "PhysicalDrive2"
    ]
    assert host.transport.ops() == []  # no VSS for physical disks
    assert "DISK_IMAGE_READ_PLAN_FALLBACK" not in host.ids()

    with RawImageReader.open(disk) as reader:
        layout = parse_layout(reader.read, size)
    assert layout is not None
    metadata = sum(length for _, length in layout.metadata)
    info = part1.info
    allocated = (info["clusters"] - info["free_clusters"]) * info["cluster_size"]
    chunk = host.repo().config.chunk_size
    read = opened[0].bytes_read
    assert metadata + allocated + len(linux) <= read <= metadata + allocated + len(linux) + chunk

    restored_path = tmp_path / "restored.img"
    restored = host.restore(restored_path)
    assert "No problems found" in run("sgdisk", "-v", str(restored_path)).decode()
    assert restored[49 * MiB : 61 * MiB] == linux
    assert restored[70 * MiB : 72 * MiB] == bytes(2 * MiB)
    (tmp_path / "p1-restored.img").write_bytes(restored[MiB : 49 * MiB])
    for name, content in part1.files.items():
        assert ntfs_file(tmp_path / "p1-restored.img", name) == content, name
