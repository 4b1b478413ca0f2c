"""hyperv runs: the Hyper-V provider (PowerShell + WMI on this host) under the VM engine
(handlers/vm_job.py). Only a Windows host has Hyper-V: elsewhere the run fails at once with
"not supported on this host" (see `supported`)."""

from __future__ import annotations

import sys
from typing import Any

from e3backup.agent.handlers.vm_job import run_vm_job, vm_refs
from e3backup.agent.run_context import EngineTask, RunContext
from e3backup.agent.wire import RunAssignment
from e3backup.sources.hypervisors.hyperv.provider import HypervProvider

UNSUPPORTED = "Hyper-V is not supported on this host: the Hyper-V engine needs a Windows host"


def supported(platform: str | None = None) -> bool:
    """Hyper-V exists only on Windows (the provider then checks the module and elevation)."""
    return (platform or sys.platform) == "win32"


def run(task: EngineTask, ctx: RunContext) -> dict[str, Any]:
    vm_refs(RunAssignment.model_validate(task.job))  # no VM chosen: say so before PowerShell
    return run_vm_job(task, ctx, HypervProvider())
