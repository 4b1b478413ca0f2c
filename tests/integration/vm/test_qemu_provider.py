"""The QEMU provider against a running guest: discovery, freeze, fleecing export, bitmaps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e3backup.sources.hypervisors.base import ConsistencyLevel
from e3backup.sources.hypervisors.qemu.provider import QemuEndpoint, QemuProvider
from fixtures.vm import DISK_BYTES

KiB = 1024


def _provider(vm: Any, tmp_path: Path) -> QemuProvider:
    return QemuProvider([QemuEndpoint(vm.qmp_path, vm.qga_path)], tmp_path / "scratch")


def test_list_and_point_in_time_view(make_vm: Any, tmp_path: Path) -> None:
    vm = make_vm("vm1")
    provider = _provider(vm, tmp_path)
    [info] = provider.list_vms()
    assert info.name == "vm1" and info.id == vm.uuid and info.state == "running"
    assert [d.name for d in info.disks] == ["vda", "vdb"]
    assert all(d.size_bytes == DISK_BYTES and d.change_tracking for d in info.disks)
    assert provider.get_vm(vm.uuid.upper()).name == "vm1"

    expected = vm.capture("vdb", tmp_path / "vdb-before.raw").read_bytes()
    view = provider.prepare(info, ConsistencyLevel.APPLICATION, {})
    try:
        assert view.consistency == ConsistencyLevel.APPLICATION
        assert view.frozen_filesystems >= 1
        assert vm.ga("guest-fsfreeze-status") == "thawed"
        vm.guest_write(64 * KiB, b"\xab" * 64 * KiB)  # after the point in time
        disks = {d.disk.name: d for d in view.disks()}
        reader = disks["vdb"].reader
        assert reader.read(0, DISK_BYTES) == expected
        assert disks["vdb"].changed_extents is None
        assert "no change-tracking token" in disks["vdb"].tracking_reason
        assert disks["vdb"].new_token
        view.commit()
    finally:
        view.cleanup()
    assert vm.qmp.execute("query-block-exports") == []
    assert vm.qmp.execute("query-block-jobs") == []
    nodes = [n["node-name"] for n in vm.qmp.execute("query-named-block-nodes", {"flat": True})]
    assert not [n for n in nodes if n.startswith("e3b-")]
