"""kvm runs: the QEMU provider over the VMs the config's QMP glob finds (handlers/vm_job.py
runs the VM engine)."""

from __future__ import annotations

from typing import Any

from e3backup.agent.handlers.vm_job import run_vm_job, vm_refs
from e3backup.agent.inventory import qemu_provider
from e3backup.agent.run_context import EngineTask, RunContext
from e3backup.agent.wire import RunAssignment
from e3backup.core.errors import UsageError


def run(task: EngineTask, ctx: RunContext) -> dict[str, Any]:
    vm_refs(RunAssignment.model_validate(task.job))  # no VM chosen: say so before anything else
    qemu = qemu_provider(task.qemu)
    if not qemu.endpoints:
        raise UsageError(
            "no QEMU VM found on this host: set qemu.qmp_glob in the agent config "
            f"(now {task.qemu.get('qmp_glob')!r})"
        )
    return run_vm_job(task, ctx, qemu)
