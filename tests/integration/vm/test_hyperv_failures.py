"""The Hyper-V provider on recorded failure outputs (tests/fixtures/hyperv/failures.json):
VM off, checkpoints disabled, VSS writer failed, RCT id unknown, disk resized, WMI error codes,
leftovers of a crashed run, a host that is not elevated, error records and timeouts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from e3backup.sources.hypervisors.base import (
    WARNING_CHECKPOINTS_DISABLED,
    WARNING_QUIESCE_FAILED,
    ConsistencyLevel,
    HypervisorError,
)
from e3backup.sources.hypervisors.hyperv import rct, records
from e3backup.sources.hypervisors.hyperv.powershell import PowerShellError
from e3backup.sources.hypervisors.hyperv.provider import HypervProvider
from fixtures.hyperv_host import HostDisks, Replay, load

MiB = 1024 * 1024
OS_DISK = r"C:\ClusterStorage\Volume1\Hyper-V\Web & DB 01\Virtual Hard Disks\os disk.vhdx"
DATA_DISK = r"C:\ClusterStorage\Volume1\Hyper-V\Web & DB 01\Virtual Hard Disks\data.vhdx"


class Host:
    def __init__(self, root: Path, os_size: int = 32 * MiB, *extra: str) -> None:
        self.disks = HostDisks(root / "host", {OS_DISK: os_size, DATA_DISK: 16 * MiB})
        self.replay = Replay(load("host", *(extra or ("failures",))), self.disks.on_call)
        self.state = root / "state"
        self.provider = HypervProvider(
            self.replay, self.state, self.disks.mapper, sleep=lambda _s: None
        )

    def prepare(self, name: str, tokens: dict[str, str] | None = None) -> Any:
        vm = self.provider.get_vm(name)
        return self.provider.prepare(vm, ConsistencyLevel.APPLICATION, tokens or {})

    def ops(self) -> list[str]:
        return self.replay.ops()


def test_vm_off_is_crash_consistent_without_a_quiesce_attempt(tmp_path: Path) -> None:
    host = Host(tmp_path)
    view = host.prepare("off-vm")
    view.cleanup()
    assert view.consistency == ConsistencyLevel.CRASH and view.warning_code is None
    assert "the VM is Off" in view.warnings[0]
    assert [p["consistency"] for op, p in host.replay.calls if op == "create-snapshot"] == [2]
    assert host.ops()[-1] == "destroy-snapshot" and host.disks.leftovers() == []


def test_checkpoints_disabled_reads_the_live_disk(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.disks.write(OS_DISK, 4 * MiB, os.urandom(MiB))
    view = host.prepare("nocp-vm")
    try:
        assert view.consistency == ConsistencyLevel.CRASH_NO_CHECKPOINT
        assert view.warning_code == WARNING_CHECKPOINTS_DISABLED
        assert "Checkpoints are disabled" in view.warnings[0]
        disk = view.disks()[0]
        assert disk.new_token is None and "checkpoints are disabled" in disk.tracking_reason
        assert disk.reader.read(0, 32 * MiB) == host.disks.content(OS_DISK)
    finally:
        view.cleanup()
    assert "create-snapshot" not in host.ops()


def test_vss_writer_failure_falls_back_to_crash_consistent(tmp_path: Path) -> None:
    host = Host(tmp_path)
    view = host.prepare("vss-fail-vm")
    view.cleanup()
    assert view.consistency == ConsistencyLevel.CRASH
    assert view.warning_code == WARNING_QUIESCE_FAILED
    [warning] = view.warnings
    assert "SqlServerWriter" in warning and "error 32768: failed" in warning
    levels = [p["consistency"] for op, p in host.replay.calls if op == "create-snapshot"]
    assert levels == [1, 2]


def _committed_tokens(host: Host, vm_id: str, size: int = 32 * MiB) -> dict[str, str]:
    state = records.RctState(host.state)
    ids = {
        "scsi0-0": "rctX:11111111-2222-4333-8444-555555555555:7",
        "scsi0-1": "rctX:66666666-7777-4888-8999-aaaaaaaaaaaa:7",
    }
    state.record(vm_id, "Microsoft:PREVIOUS", records.Committed("Microsoft:RP-F0000001", ids))
    return {
        "scsi0-0": rct.Token(
            "Microsoft:PREVIOUS", "3f2504e0-4f89-11d3-9a0c-0305e82c3301", size
        ).encode(),
        "scsi0-1": rct.Token(
            "Microsoft:PREVIOUS", "7c9e6679-7425-40de-944b-e07fc1f90ae7", 16 * MiB
        ).encode(),
    }


def test_unknown_rct_id_means_full_read_of_that_disk(tmp_path: Path) -> None:
    host = Host(tmp_path)
    tokens = _committed_tokens(host, "00000000-0000-4000-8000-000000000004")
    view = host.prepare("rct-vm", tokens)
    try:
        os_disk, data_disk = view.disks()
        assert os_disk.changed_extents is None
        assert "invalid parameter" in os_disk.tracking_reason
        assert data_disk.changed_extents == []  # the other disk's chain is intact
    finally:
        view.cleanup()


def test_resized_disk_means_full_read(tmp_path: Path) -> None:
    host = Host(tmp_path, 64 * MiB)
    tokens = _committed_tokens(host, "00000000-0000-4000-8000-000000000005")
    view = host.prepare("resized-vm", tokens)
    try:
        os_disk = view.disks()[0]
        assert os_disk.changed_extents is None
        assert "resized (33554432 → 67108864 bytes)" in os_disk.tracking_reason
    finally:
        view.cleanup()


def test_a_broken_chain_still_drops_the_jobs_previous_reference_point(tmp_path: Path) -> None:
    """Every disk read in full (the OS disk resized, the data disk without a token): once the
    new reference point exists, the one the previous backup made is destroyed, not left on
    the host for ever."""
    host = Host(tmp_path, 64 * MiB)
    tokens = _committed_tokens(host, "00000000-0000-4000-8000-000000000005")
    del tokens["scsi0-1"]
    view = host.prepare("resized-vm", tokens)
    try:
        assert [d.changed_extents for d in view.disks()] == [None, None]
        view.commit()
    finally:
        view.cleanup()
    destroyed = [p for op, p in host.replay.calls if op == "destroy-reference-point"]
    assert destroyed == [
        {"vm": "00000000-0000-4000-8000-000000000005", "reference_point": "Microsoft:RP-F0000001"}
    ]
    assert "Microsoft:RP-F0000005" in (view.disks()[0].committed_token or "")


def test_wmi_error_codes_fail_the_vm_with_the_meaning(tmp_path: Path) -> None:
    host = Host(tmp_path)
    with pytest.raises(HypervisorError, match=r"error 5: invalid state"):
        host.prepare("badstate-vm")


def test_leftover_recovery_snapshots_of_ours_are_removed_first(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.prepare("leftover-vm").cleanup()
    destroyed = [p["snapshot"] for op, p in host.replay.calls if op == "destroy-snapshot"]
    assert destroyed[0] == "Microsoft:OLD-E3B" and "Microsoft:OTHER" not in destroyed


def test_host_without_elevation_or_module_is_refused_clearly(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.replay.exchanges["host-check"] = [
        {"data": {"User": "CONTOSO\\backup", "Elevated": False, "HyperVModule": True}}
    ]
    with pytest.raises(HypervisorError, match=r"administrator rights: CONTOSO\\backup"):
        host.provider.list_vms()


def test_error_record_and_timeout_become_hypervisor_errors(tmp_path: Path) -> None:
    host = Host(tmp_path)
    message = 'Hyper-V was unable to find a virtual machine with name "x".'
    host.replay.exchanges["describe-vms"] = [
        {"error": {"message": message, "id": "InvalidParameter,Microsoft.HyperV.PowerShell"}},
        {"timeout": True},
    ]
    with pytest.raises(PowerShellError) as caught:
        host.provider.get_vm("x")
    assert caught.value.message == message and caught.value.error_id.startswith("InvalidParam")
    with pytest.raises(HypervisorError, match="did not finish within"):
        host.provider.get_vm("x")
