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


def _guardians(scratch: Path) -> list[int]:
    """PIDs of cleanup guardians whose control socket lives in `scratch`."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"e3backup.sources.hypervisors.qemu.guardian" in cmdline and any(
            arg.startswith(str(scratch).encode()) for arg in cmdline
        ):
            pids.append(int(entry.name))
    return pids


def _leftovers(vm: Any) -> bool:
    nodes = vm.qmp.execute("query-named-block-nodes", {"flat": True})
    return bool(
        vm.qmp.execute("query-block-exports")
        or vm.qmp.execute("query-block-jobs")
        or any(n["node-name"].startswith("e3b-") for n in nodes)
        or vm.ga("guest-fsfreeze-status") != "thawed"
    )


def test_killed_engine_is_cleaned_up_by_its_guardian(make_vm: Any, tmp_path: Path) -> None:
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
    assert _guardians(scratch)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The guardian notices the engine's death and tears the backup down on its own.
    deadline = time.monotonic() + 30
    while _leftovers(vm) or _guardians(scratch):
        assert time.monotonic() < deadline, (
            vm.qmp.execute("query-block-exports"),
            _guardians(scratch),
        )
        time.sleep(0.1)
    assert_no_leftovers(vm)
    assert list(scratch.glob("*.qcow2")) == []
    assert list(scratch.glob("*.sock")) == []
    nodes = vm.qmp.execute("query-named-block-nodes", {"flat": True})
    vdb_bitmaps = [b["name"] for n in nodes if n["node-name"] == "vdb-fmt"
                   for b in n.get("dirty-bitmaps", [])]  # fmt: skip
    assert vdb_bitmaps == [token]  # the rotation was undone: the parent's token is valid again
    job, _ = run_job(repo, [vm], scratch)
    assert job.status == "success"
    [r] = job.vm_results
    # The killed backup never committed: the old token's bitmap is restored and still used.
    assert r.backup_type == "Incremental", r.to_dict()
    assert r.disk_manifests["vdb"]["bytes_read"] == 64 * 1024
    assert token not in r.change_tokens.values()
    assert_no_leftovers(vm)
    assert _guardians(scratch) == []


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
