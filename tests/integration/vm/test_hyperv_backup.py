"""Full → incremental → chain break → full of a Hyper-V VM through the real VM engine into a
real repository, on recorded exchanges (tests/fixtures/hyperv/chain.json) with VhdxWriter
files standing in for the disks; every backup restores to what the guest had at its point."""

from __future__ import annotations

import os
from pathlib import Path

from helpers import KiB, MiB, init_repo, open_repo, restored

from e3backup.engines import vm_result as ev
from e3backup.engines.vm_backup import VmBackupJob, VmBackupOptions
from e3backup.engines.vm_result import JobResult, VmEvent
from e3backup.sources.hypervisors.hyperv.provider import HypervProvider
from fixtures.hyperv_host import HostDisks, Replay, load

OS_DISK = r"C:\ClusterStorage\Volume1\Hyper-V\Web & DB 01\Virtual Hard Disks\os disk.vhdx"
DATA_DISK = r"C:\ClusterStorage\Volume1\Hyper-V\Web & DB 01\Virtual Hard Disks\data.vhdx"
DISKS = {"scsi0-0": OS_DISK, "scsi0-1": DATA_DISK}


def test_full_incremental_chain_break_full_restore_exact(tmp_path: Path) -> None:
    host = HostDisks(tmp_path / "host", {OS_DISK: 32 * MiB, DATA_DISK: 16 * MiB})
    host.write(OS_DISK, 0, os.urandom(3 * MiB))
    host.write(DATA_DISK, 8 * MiB, os.urandom(MiB))
    replay = Replay(load("host", "chain"), host.on_call)
    provider = HypervProvider(replay, tmp_path / "state", host.mapper, sleep=lambda _s: None)
    repo_dir = tmp_path / "repo"
    init_repo(repo_dir)
    oracles: list[dict[str, bytes]] = []

    def run(during: tuple[int, bytes] | None = None) -> tuple[JobResult, list[VmEvent]]:
        events: list[VmEvent] = []

        def on_event(event: VmEvent) -> None:
            events.append(event)
            if event.message_id == ev.CHECKPOINT_CREATED:  # the point in time
                oracles.append({name: host.content(path) for name, path in DISKS.items()})
                if during:  # the guest keeps writing: into the AVHDX, not this backup
                    host.write(OS_DISK, during[0], during[1])

        job = VmBackupJob(open_repo(repo_dir), provider, VmBackupOptions(), on_event)
        return job.run(["Web &amp; DB 01"]), events  # HTML-encoded, as the seed's forms send it

    job1, _ = run(during=(30 * MiB, os.urandom(64 * KiB)))
    [r1] = job1.vm_results
    assert (job1.status, r1.backup_type, r1.consistency_level) == ("success", "Full", "Application")
    assert set(r1.change_tokens) == set(DISKS)

    host.write(OS_DISK, 2 * MiB + 4 * KiB, os.urandom(8 * KiB))  # both inside RCT's ranges
    host.write(OS_DISK, 20 * MiB + 64 * KiB, os.urandom(128 * KiB))
    job2, _ = run()
    [r2] = job2.vm_results
    assert (job2.status, r2.backup_type) == ("success", "Incremental"), r2.to_dict()
    # Only RCT's ranges were read: 1 + 2 + 1 MiB on the OS disk (the last one holds what the
    # guest wrote during backup 1), nothing on the data disk.
    assert r2.disk_manifests["scsi0-0"]["bytes_read"] == 4 * MiB
    assert r2.disk_manifests["scsi0-1"]["bytes_read"] == 0
    assert ("destroy-reference-point", "Microsoft:RP-7E1A0001") in [
        (op, p.get("reference_point")) for op, p in replay.calls
    ]

    host.write(OS_DISK, 5 * MiB, os.urandom(64 * KiB))
    job3, events3 = run()
    [r3] = job3.vm_results
    assert (job3.status, r3.backup_type) == ("success", "Full"), r3.to_dict()
    reasons = {
        e.params["disk"]: e.params["reason"] for e in events3 if e.message_id == ev.DISK_PLAN
    }
    assert all("no longer exists" in reason for reason in reasons.values()), reasons

    assert host.leftovers() == []  # every recovery snapshot converted (merged)
    assert {op: n for op, n in replay.left().items() if op != "describe-vms"} == {
        "host-check": 1,
        "list-recovery-snapshots": 1,
    }  # only the standing answers are left: every recorded exchange was used
    for result, oracle in zip((r1, r2, r3), oracles, strict=True):
        for name in DISKS:
            out = tmp_path / f"restore-{result.snapshot_id}-{name}.raw"
            assert restored(repo_dir, result.snapshot_id or "", name, out) == oracle[name]
    assert oracles[0] != oracles[1] and oracles[1] != oracles[2]
