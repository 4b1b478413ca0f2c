"""Full then incremental backups of a running two-disk VM, restored and compared with what the
guest had at each backup's point in time (offline `qemu-img convert` of the paused VM)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from helpers import CHUNK, MiB, assert_no_leftovers, init_repo, restored, run_job

from e3backup.engines import vm_result as ev


def test_full_then_incremental_application_consistent(make_vm: Any, tmp_path: Path) -> None:
    vm = make_vm("vm1")
    repo, scratch = tmp_path / "repo", tmp_path / "scratch"
    init_repo(repo)
    before = {d: vm.capture(d, tmp_path / f"{d}-1.raw").read_bytes() for d in ("vda", "vdb")}
    during = os.urandom(CHUNK)

    def write_during_backup(event: Any) -> None:
        if event.message_id == ev.CHECKPOINT_CREATED:
            vm.guest_write(3 * MiB, during)  # after the point in time: belongs to the next one

    job1, events1 = run_job(repo, [vm], scratch, write_during_backup)
    assert job1.status == "success", job1.to_dict()
    [r1] = job1.vm_results
    assert (r1.backup_type, r1.consistency_level, r1.warning_code) == ("Full", "Application", None)
    assert all("no parent snapshot" in d["read_plan_reason"] for d in r1.disk_manifests.values())
    assert set(r1.change_tokens) == {"vda", "vdb"}
    ids = [e.message_id for e in events1]
    assert ids[0] == ev.VM_STARTING and ev.VM_COMPLETE in ids and ids[-1] == ev.BACKUP_COMPLETE
    assert_no_leftovers(vm)
    for disk in ("vda", "vdb"):
        assert restored(repo, r1.snapshot_id or "", disk, tmp_path / f"r1-{disk}") == before[disk]

    written = {5 * MiB + CHUNK: os.urandom(CHUNK), 20 * MiB: os.urandom(2 * CHUNK)}
    for offset, data in written.items():
        vm.guest_write(offset, data)
    after = {d: vm.capture(d, tmp_path / f"{d}-2.raw").read_bytes() for d in ("vda", "vdb")}
    assert after["vdb"][3 * MiB : 3 * MiB + CHUNK] == during

    job2, _ = run_job(repo, [vm], scratch)
    [r2] = job2.vm_results
    assert (r2.backup_type, r2.consistency_level) == ("Incremental", "Application"), r2.to_dict()
    # Only the changed blocks were read: 1 block during backup 1 + 1 + 2 blocks after it.
    assert r2.disk_manifests["vdb"]["bytes_read"] == 4 * CHUNK
    assert r2.disk_manifests["vda"]["bytes_read"] == 0
    assert r2.change_tokens["vdb"] != r1.change_tokens["vdb"]
    assert_no_leftovers(vm)
    for disk in ("vda", "vdb"):
        assert restored(repo, r2.snapshot_id or "", disk, tmp_path / f"r2-{disk}") == after[disk]
