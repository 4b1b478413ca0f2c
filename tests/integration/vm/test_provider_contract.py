"""The provider contract (sources/hypervisors/base.py), the same tests for every provider:
QEMU for real (one tiny guest for the module), Hyper-V through recorded PowerShell/WMI
exchanges (tests/fixtures/hyperv/contract.json) over real VHDX/AVHDX files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e3backup.sources.hypervisors.base import (
    ConsistencyLevel,
    HypervisorProvider,
    VmNotFound,
)
from e3backup.sources.hypervisors.hyperv.provider import HypervProvider
from e3backup.sources.hypervisors.qemu.provider import QemuEndpoint, QemuProvider
from fixtures.hyperv_host import HostDisks, Replay, load
from fixtures.vm import GuestImage, TestVm

KiB, MiB = 1024, 1024 * 1024
WRITE_AT = 1 * MiB + 128 * KiB
OS_DISK = r"C:\ClusterStorage\Volume1\Hyper-V\Web & DB 01\Virtual Hard Disks\os disk.vhdx"
DATA_DISK = r"C:\ClusterStorage\Volume1\Hyper-V\Web & DB 01\Virtual Hard Disks\data.vhdx"


class QemuHarness:
    def __init__(self, vm: TestVm, scratch: Path) -> None:
        self.vm = vm
        self.scratch = scratch
        scratch.mkdir(parents=True, exist_ok=True)
        self.provider: HypervisorProvider = QemuProvider(
            [QemuEndpoint(vm.qmp_path, vm.qga_path)], scratch
        )
        self.name, self.vm_id, self.disk = vm.name, vm.uuid, "vdb"

    def guest_write(self, offset: int, data: bytes) -> None:
        self.vm.guest_write(offset, data)

    def content(self) -> bytes:
        return self.vm.capture("vdb", self.scratch / "oracle.raw").read_bytes()

    def leftovers(self) -> list[str]:
        qmp = self.vm.qmp
        nodes = [n["node-name"] for n in qmp.execute("query-named-block-nodes", {"flat": True})]
        exports = [e["id"] for e in qmp.execute("query-block-exports")]
        return [n for n in nodes if n.startswith("e3b-")] + exports


class HypervHarness:
    def __init__(self, root: Path) -> None:
        self.disks = HostDisks(root / "host", {OS_DISK: 32 * MiB, DATA_DISK: 16 * MiB})
        self.replay = Replay(load("host", "contract"), self.disks.on_call)
        self.provider = HypervProvider(
            self.replay, root / "state", self.disks.mapper, sleep=lambda _s: None
        )
        self.name, self.vm_id = "Web & DB 01", "9e479325-c193-45e2-a918-5a09a06ff251"
        self.disk = "scsi0-0"

    def guest_write(self, offset: int, data: bytes) -> None:
        self.disks.write(OS_DISK, offset, data)

    def content(self) -> bytes:
        return self.disks.content(OS_DISK)

    def leftovers(self) -> list[str]:
        return self.disks.leftovers()


@pytest.fixture(scope="module")
def qemu_vm(guest_image: GuestImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestVm]:
    workdir = tmp_path_factory.mktemp("contract") / "vm1"
    workdir.mkdir()
    vm = TestVm(guest_image, workdir, "contract-vm")
    vm.create_disks()
    vm.start()
    yield vm
    vm.kill()


@pytest.fixture(params=["qemu", "hyperv"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "qemu":
        vm = request.getfixturevalue("qemu_vm")
        return QemuHarness(vm, tmp_path / "scratch")
    return HypervHarness(tmp_path)


def test_lookup_by_name_and_by_id(harness: Any) -> None:
    provider = harness.provider
    by_name = provider.get_vm(harness.name)
    assert by_name.id == harness.vm_id and by_name.name == harness.name
    assert provider.get_vm(harness.vm_id.upper()).id == harness.vm_id
    assert harness.vm_id in [v.id for v in provider.list_vms()]
    assert harness.disk in [d.name for d in by_name.disks]
    with pytest.raises(VmNotFound):
        provider.get_vm("no-such-vm")


def _covered(extents: list[tuple[int, int]], offset: int, length: int) -> bool:
    return any(o <= offset and offset + length <= o + n for o, n in extents)


def test_point_in_time_tokens_and_cleanup(harness: Any) -> None:
    provider = harness.provider
    vm = provider.get_vm(harness.name)
    expected = harness.content()
    view = provider.prepare(vm, ConsistencyLevel.APPLICATION, {})
    try:
        assert view.consistency == ConsistencyLevel.APPLICATION and view.warning_code is None
        assert view.checkpoint_id
        harness.guest_write(64 * KiB, b"\xab" * 64 * KiB)  # after the point in time
        disks = {d.disk.name: d for d in view.disks()}
        first = disks[harness.disk]
        assert first.reader.read(0, len(expected)) == expected
        assert first.changed_extents is None and "token" in first.tracking_reason
        tokens = {d.disk.name: d.new_token for d in view.disks() if d.new_token}
        assert harness.disk in tokens
        view.commit()
    finally:
        view.cleanup()
    assert harness.leftovers() == []

    data = bytes(range(256)) * 256  # 64 KiB
    harness.guest_write(WRITE_AT, data)
    for _ in range(2):  # without commit the old tokens stay valid
        view = provider.prepare(vm, ConsistencyLevel.APPLICATION, dict(tokens))
        try:
            changed = {d.disk.name: d for d in view.disks()}[harness.disk]
            assert changed.changed_extents is not None, changed.tracking_reason
            assert _covered(changed.changed_extents, WRITE_AT, len(data))
            assert sum(n for _, n in changed.changed_extents) < changed.reader.size_bytes
            assert changed.reader.read(WRITE_AT, len(data)) == data
        finally:
            view.cleanup()
        assert harness.leftovers() == []


def test_foreign_token_means_full_read_with_reason(harness: Any) -> None:
    provider = harness.provider
    vm = provider.get_vm(harness.vm_id)
    if isinstance(harness, HypervHarness):  # consume the recorded P1-P3 answers first
        for tokens in ({}, {}, {}):
            provider.prepare(vm, ConsistencyLevel.APPLICATION, tokens).cleanup()
    view = provider.prepare(vm, ConsistencyLevel.APPLICATION, {harness.disk: "e3b-0-bogus"})
    try:
        disk = {d.disk.name: d for d in view.disks()}[harness.disk]
        assert disk.changed_extents is None and disk.tracking_reason
    finally:
        view.cleanup()
    assert harness.leftovers() == []
