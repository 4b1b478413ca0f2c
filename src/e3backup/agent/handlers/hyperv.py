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

UNSUPPORTED = hyperv_host.UNSUPPORTED
supported = hyperv_host.supported


def run(task: EngineTask, ctx: RunContext) -> dict[str, Any]:
    job = RunAssignment.model_validate(task.job)
    vm_refs(job)  # no VM chosen: say so before PowerShell
    provider = hyperv_host.provider(task.hyperv, [vm.rct_ids for vm in job.vms])
    return run_vm_job(task, ctx, provider)
