"""Multi-VM jobs, cancellation and a killed engine."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from cli_harness import E3BACKUP
from helpers import PASSWORD, assert_no_leftovers, init_repo, open_repo, run_job

from e3backup.core.cancel import CancelToken
from e3backup.engines import vm_result as ev
from e3backup.engines.progress import Progress
from e3backup.engines.vm_backup import VmBackupJob, VmBackupOptions
from e3backup.sources.hypervisors.qemu.provider import QemuEndpoint, QemuProvider


def test_two_vm_job_with_one_failure_is_partial_success(make_vm: Any, tmp_path: Path) -> None:
    good = make_vm("good")
    bad = make_vm("bad")
    bad.kill()  # its QMP socket no longer answers
    repo = tmp_path / "repo"
    init_repo(repo)
    progress: list[Progress] = []
    provider = QemuProvider(
        [QemuEndpoint(v.qmp_path, v.qga_path) for v in (good, bad)], tmp_path / "scratch"
    )
    job = VmBackupJob(open_repo(repo), provider, VmBackupOptions(), None, progress.append)
    result = job.run([str(good.qmp_path), str(bad.qmp_path)])
    assert result.status == "partial_success"
    assert [r.status for r in result.vm_results] == ["success", "failed"]
    assert result.vm_results[1].error
    done = [p.bytes_processed for p in progress]
    assert done == sorted(done) and progress[-1].progress_pct == 100.0
    assert progress[-1].bytes_total == result.vm_results[0].total_bytes


def test_cancel_leaves_nothing_behind(make_vm: Any, tmp_path: Path) -> None:
    vm = make_vm("vm1")
    repo, scratch = tmp_path / "repo", tmp_path / "scratch"
    init_repo(repo)
    cancel = CancelToken()
    provider = QemuProvider([QemuEndpoint(vm.qmp_path, vm.qga_path)], scratch)

    def on_event(event: ev.VmEvent) -> None:
        if event.message_id == ev.CHECKPOINT_CREATED:
            cancel.cancel("test")

    job = VmBackupJob(open_repo(repo), provider, VmBackupOptions(), on_event, None, cancel)
    result = job.run([str(vm.qmp_path)])
    assert result.status == "cancelled"
    assert open_repo(repo).list_snapshots() == []
    assert_no_leftovers(vm)
    assert list(scratch.glob("*.qcow2")) == []
    job2, _ = run_job(repo, [vm], scratch)
    assert job2.status == "success" and job2.vm_results[0].backup_type == "Full"


def test_killed_engine_leftovers_are_removed_by_next_backup(make_vm: Any, tmp_path: Path) -> None:
    vm = make_vm("vm1")
    repo, scratch = tmp_path / "repo", tmp_path / "scratch"
    init_repo(repo)
    job, _ = run_job(repo, [vm], scratch)
    token = job.vm_results[0].change_tokens["vdb"]
    vm.guest_write(2 * 1024 * 1024, os.urandom(64 * 1024))
    env = {**os.environ, "E3BACKUP_PASSWORD": PASSWORD}
    argv = [
        str(E3BACKUP), "--repo", str(repo), "--limit-upload", "16", "backup", "vm",
        "--qmp", str(vm.qmp_path), "--qga", str(vm.qga_path), "--scratch-dir", str(scratch),
        "--json",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not vm.qmp.execute("query-block-exports"):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert vm.qmp.execute("query-block-exports")  # kill -9: nothing could clean up yet
    job, _ = run_job(repo, [vm], scratch)
    assert job.status == "success"
    [r] = job.vm_results
    # The killed backup never committed: the old token's bitmap is restored and still used.
    assert r.backup_type == "Incremental", r.to_dict()
    assert r.disk_manifests["vdb"]["bytes_read"] == 64 * 1024
    assert token not in r.change_tokens.values()
    assert_no_leftovers(vm)


def test_sigterm_cancels_and_cleans_up(make_vm: Any, tmp_path: Path) -> None:
    vm = make_vm("vm1")
    repo, scratch = tmp_path / "repo", tmp_path / "scratch"
    init_repo(repo)
    env = {**os.environ, "E3BACKUP_PASSWORD": PASSWORD}
    argv = [
        str(E3BACKUP), "--repo", str(repo), "--limit-upload", "16", "backup", "vm",
        "--vm", f"qmp={vm.qmp_path},qga={vm.qga_path}", "--scratch-dir", str(scratch), "--json",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not vm.qmp.execute("query-block-exports"):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert b'"status": "cancelled"' in out
    assert_no_leftovers(vm)
