"""Shared helpers for the VM tests: a repository, running a job, restoring and comparing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e3backup.engines.image_backup import restore_disk
from e3backup.engines.vm_backup import VmBackupJob, VmBackupOptions
from e3backup.engines.vm_result import JobResult, VmEvent
from e3backup.repo.repository import Repository
from e3backup.sources.hypervisors.qemu.provider import QemuEndpoint, QemuProvider
from e3backup.storage.local import LocalBackend

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB  # = the dirty-bitmap granularity, so read bytes are exactly the changed blocks
PASSWORD = "vm-test"


def init_repo(path: Path) -> None:
    Repository.init(LocalBackend(path), PASSWORD, chunk_size=CHUNK)


def open_repo(path: Path) -> Repository:
    return Repository.open(LocalBackend(path), PASSWORD)


def run_job(
    repo_dir: Path,
    vms: list[Any],
    scratch: Path,
    on_event: Any = None,
    refs: list[str] | None = None,
    **options: Any,
) -> tuple[JobResult, list[VmEvent]]:
    events: list[VmEvent] = []

    def collect(event: VmEvent) -> None:
        events.append(event)
        if on_event is not None:
            on_event(event)

    provider = QemuProvider([QemuEndpoint(v.qmp_path, v.qga_path) for v in vms], scratch)
    job = VmBackupJob(open_repo(repo_dir), provider, VmBackupOptions(**options), collect)
    result = job.run(refs if refs is not None else [str(v.qmp_path) for v in vms])
    return result, events


def restored(repo_dir: Path, snapshot_id: str, disk: str, out: Path) -> bytes:
    repo = open_repo(repo_dir)
    restore_disk(repo, repo.find_snapshot(snapshot_id), disk, out)
    return out.read_bytes()


def assert_no_leftovers(vm: Any) -> None:
    assert vm.qmp.execute("query-block-exports") == []
    assert vm.qmp.execute("query-block-jobs") == []
    nodes = [n["node-name"] for n in vm.qmp.execute("query-named-block-nodes", {"flat": True})]
    assert [n for n in nodes if n.startswith("e3b-")] == []
    if vm.qga_path is not None:
        assert vm.ga("guest-fsfreeze-status") == "thawed"
