"""What kvm and hyperv runs share: the VM engine over a provider, chosen VMs by name or id
(seed getVMByNameOrGUID), policy (change tracking, consistency, parallelism), per-VM results."""

from __future__ import annotations

from typing import Any

from e3backup.agent.handlers.common import (
    apply_retention,
    open_job_repository,
    repository_stats,
    run_tags,
)
from e3backup.agent.run_context import EngineTask, RunContext
from e3backup.agent.wire import RunAssignment
from e3backup.core.errors import UsageError
from e3backup.engines.vm_backup import VmBackupJob, VmBackupOptions
from e3backup.engines.vm_result import VmEvent
from e3backup.sources.hypervisors.base import (
    ConsistencyLevel,
    HypervisorProvider,
    PointInTimeView,
    VmInfo,
)


class FullReads:
    """The provider with change tracking ignored (policy enable_change_tracking = false): no
    parent tokens, so every disk is read in full."""

    def __init__(self, inner: HypervisorProvider) -> None:
        self.inner = inner
        self.name = inner.name

    def list_vms(self) -> list[VmInfo]:
        return self.inner.list_vms()

    def get_vm(self, name_or_id: str) -> VmInfo:
        return self.inner.get_vm(name_or_id)

    def prepare(
        self, vm: VmInfo, consistency: ConsistencyLevel, tokens: dict[str, str]
    ) -> PointInTimeView:
        return self.inner.prepare(vm, consistency, {})


def vm_refs(job: RunAssignment) -> list[str]:
    refs = [vm.vm_guid or vm.vm_name or vm.vm_ref for vm in job.vms]
    refs = [r for r in refs if r]
    if not refs:
        raise UsageError("the job chooses no VM to back up")
    return refs


def run_vm_job(task: EngineTask, ctx: RunContext, backend: HypervisorProvider) -> dict[str, Any]:
    job = RunAssignment.model_validate(task.job)
    refs = vm_refs(job)
    repo, policy = open_job_repository(job, ctx)
    provider = backend if policy.change_tracking else FullReads(backend)
    consistency = (
        ConsistencyLevel.CRASH
        if policy.consistency_level == "crash"
        else ConsistencyLevel.APPLICATION
    )
    options = VmBackupOptions(consistency, tags=run_tags(job), workers=policy.parallelism)

    def on_event(event: VmEvent) -> None:
        ctx.emit(event.message_id, event.level, **event.params)

    result = VmBackupJob(repo, provider, options, on_event, ctx.progress, ctx.cancel).run(refs)
    vm_results = []
    for r in result.vm_results:
        doc = r.to_dict()
        doc["vm_guid"] = r.vm_id or r.vm_name
        vm_results.append(doc)
    errors = [f"{r.vm_name}: {r.error}" for r in result.vm_results if r.error]
    saved = {r.snapshot_id for r in result.vm_results if r.snapshot_id}
    if saved and result.status != "cancelled":  # the job's retention, for the VMs just saved
        sources = {s.source_id for s in repo.list_snapshots() if s.id in saved}
        apply_retention(repo, job.retention_json, sources, ctx)
    out: dict[str, Any] = {
        "status": result.status,
        "vm_results": vm_results,
        "repository_stats": repository_stats(repo),
    }
    if result.status in ("failed", "partial_success") and errors:
        out["error"] = "; ".join(errors)[:2000]
    manifests = {
        f"{r.vm_name}/{name}": disk
        for r in result.vm_results
        for name, disk in r.disk_manifests.items()
    }
    if manifests:
        out["disk_manifests_json"] = manifests
    return out
