"""hyperv runs: the Hyper-V provider (PowerShell + WMI on this host, the config's `[hyperv]`
section) under the VM engine (handlers/vm_job.py), given the RCT records the server kept from
the previous run (`vms[].rct_ids`: hyperv/records.py). Only a Windows host has Hyper-V:
elsewhere the run fails at once with "not supported on this host" (see `supported`)."""

from __future__ import annotations

from typing import Any

from e3backup.agent import hyperv_host
from e3backup.agent.handlers.vm_job import run_vm_job, vm_refs
from e3backup.agent.run_context import EngineTask, RunContext
from e3backup.agent.wire import RunAssignment
from e3backup.sources.hypervisors.hyperv import paths
from e3backup.sources.hypervisors.hyperv.powershell import Transport

UNSUPPORTED = hyperv_host.UNSUPPORTED
supported = hyperv_host.supported


def run(task: EngineTask, ctx: RunContext) -> dict[str, Any]:
    return run_with(task, ctx)


def run_with(
    task: EngineTask,
    ctx: RunContext,
    transport: Transport | None = None,
    path_mapper: paths.PathMapper = paths.local_path,
) -> dict[str, Any]:
    """`run` over another transport and path mapping (the recorded exchanges in tests)."""
    job = RunAssignment.model_validate(task.job)
    vm_refs(job)  # no VM chosen: say so before PowerShell
    records = [vm.rct_ids for vm in job.vms]
    provider = hyperv_host.provider(task.hyperv, records, transport, path_mapper)
    return run_vm_job(task, ctx, provider)
