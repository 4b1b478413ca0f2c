"""When change tracking or the parent cannot be trusted the disk is read Full, with the reason;
without a guest agent the backup is crash-consistent with the documented warning."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from helpers import CHUNK, MiB, assert_no_leftovers, init_repo, restored, run_job

from e3backup.engines import vm_result as ev
from e3backup.repo import formats
from e3backup.sources.hypervisors.base import WARNING_QUIESCE_FAILED


def _plans(result: Any) -> dict[str, tuple[str, str]]:
    [r] = result.vm_results
    return {n: (d["read_plan"], d["read_plan_reason"]) for n, d in r.disk_manifests.items()}


def test_without_guest_agent_falls_back_to_crash(make_vm: Any, tmp_path: Path) -> None:
    vm = make_vm("noagent", agent=False)
    init_repo(tmp_path / "repo")
    job, events = run_job(tmp_path / "repo", [vm], tmp_path / "scratch")
    [r] = job.vm_results
    assert job.status == "success"
    assert (r.consistency_level, r.warning_code) == ("Crash", WARNING_QUIESCE_FAILED)
    assert any("crash-consistent" in w for w in r.warnings)
    assert ev.QUIESCE_FAILED in [e.message_id for e in events]


def test_untrusted_change_tracking_reads_full(make_vm: Any, tmp_path: Path) -> None:
    vm = make_vm("vm1")
    repo, scratch = tmp_path / "repo", tmp_path / "scratch"
    init_repo(repo)
    job, _ = run_job(repo, [vm], scratch)
    token = job.vm_results[0].change_tokens["vdb"]

    # 1. The bitmap was deleted behind our back.
    vm.qmp.execute("block-dirty-bitmap-remove", {"node": "vdb-fmt", "name": token})
    job = run_job(repo, [vm], scratch)[0]
    plans = _plans(job)
    assert plans["vda"] == ("incremental", "")
    assert plans["vdb"][0] == "full" and f"dirty bitmap {token} is gone" in plans["vdb"][1]

    # 2. The bitmap misses writes: sampled verification catches it and reads the disk Full.
    token = job.vm_results[0].change_tokens["vdb"]
    vm.guest_write(7 * MiB, os.urandom(4 * CHUNK))
    vm.qmp.execute("block-dirty-bitmap-clear", {"node": "vdb-fmt", "name": token})
    expected = vm.capture("vdb", tmp_path / "vdb-2.raw").read_bytes()
    job, events = run_job(repo, [vm], scratch, verify_sample_chunks=10**6)
    plans = _plans(job)
    assert plans["vdb"][0] == "full" and "sampled verification" in plans["vdb"][1]
    assert ev.VERIFY_MISMATCH in [e.message_id for e in events]
    snap = job.vm_results[0].snapshot_id or ""
    assert restored(repo, snap, "vdb", tmp_path / "r-vdb") == expected

    # 3. The disk was resized.
    vm.qmp.execute("block_resize", {"node-name": "vdb-fmt", "size": 48 * MiB})
    job = run_job(repo, [vm], scratch)[0]
    plans = _plans(job)
    assert plans["vdb"][0] == "full" and "disk size changed" in plans["vdb"][1]
    assert plans["vda"] == ("incremental", "")

    # 4. The parent failed verification (its chunks are no longer indexed in the repository).
    for index_file in (repo / formats.INDEX_PREFIX.rstrip("/")).rglob("*"):
        if index_file.is_file():
            index_file.unlink()
    job = run_job(repo, [vm], scratch)[0]
    assert job.status == "success"
    for plan, reason in _plans(job).values():
        assert plan == "full" and "failed verification" in reason
    assert_no_leftovers(vm)


def test_bitmaps_survive_restart_but_not_a_crash(make_vm: Any, tmp_path: Path) -> None:
    vm = make_vm("vm1")
    repo, scratch = tmp_path / "repo", tmp_path / "scratch"
    init_repo(repo)
    run_job(repo, [vm], scratch)
    vm.quit()  # clean shutdown: persistent bitmaps are stored in the qcow2 files
    vm.start()
    job = run_job(repo, [vm], scratch)[0]
    assert job.vm_results[0].backup_type == "Incremental", job.to_dict()
    vm.quit()  # the new tokens' bitmaps reach the qcow2 files only on a clean close
    vm.start()
    vm.kill()  # bitmaps loaded at start are marked in-use: after a kill they are inconsistent
    vm.start()
    job = run_job(repo, [vm], scratch)[0]
    assert job.status == "success"
    for plan, reason in _plans(job).values():
        assert plan == "full" and "inconsistent" in reason
    job = run_job(repo, [vm], scratch)[0]
    assert job.vm_results[0].backup_type == "Incremental"
