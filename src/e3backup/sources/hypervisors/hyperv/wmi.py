"""WMI methods of `root\\virtualization\\v2` and their jobs (Msvm_ConcreteJob).

A method returns 0 (done), 4096 (a job was started: poll it) or an error code; a job ends in
JobState 7 (Completed) or 8/9/10 (Terminated/Killed/Exception) with ErrorCode and
ErrorDescription. Codes and states are those of the Microsoft documentation (hyperv_v2:
Msvm_VirtualSystemSnapshotService methods, Msvm_ImageManagementService methods,
Msvm_ConcreteJob); the messages below say what they mean, the job's own (localized)
ErrorDescription comes first when there is one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from e3backup.sources.hypervisors.base import HypervisorError
from e3backup.sources.hypervisors.hyperv.powershell import PowerShell, as_int, as_str

NAMESPACE = r"root\virtualization\v2"
RETURN_OK = 0
RETURN_JOB_STARTED = 4096

# Msvm_VirtualSystemSnapshotService / ReferencePointService methods (CIM convention).
SERVICE_CODES = {
    1: "not supported",
    2: "failed",
    3: "timed out",
    4: "invalid parameter",
    5: "invalid state",
    6: "invalid type",
    4097: "method reserved",
}
# Msvm_ImageManagementService methods and most job ErrorCodes.
IMAGE_CODES = {
    32768: "failed",
    32769: "access denied",
    32770: "not supported",
    32771: "status is unknown",
    32772: "timed out",
    32773: "invalid parameter",
    32774: "system is in use",
    32775: "invalid state for this operation",
    32776: "incorrect data type",
    32777: "system is not available",
    32778: "out of memory",
    32779: "file not found",
}
JOB_STATES = {
    2: "New",
    3: "Starting",
    4: "Running",
    5: "Suspended",
    6: "Shutting Down",
    7: "Completed",
    8: "Terminated",
    9: "Killed",
    10: "Exception",
    11: "Service",
}
JOB_RUNNING = {2, 3, 4, 5, 6, 11}
JOB_COMPLETED = 7

DEFAULT_JOB_TIMEOUT_S = 1800.0
POLL_INTERVAL_S = 1.0
_JOB_ID = re.compile(r"^[A-Za-z0-9:{}\-_.\\]+$")

_JOB_STATE = r"""
$j = Get-CimInstance -Namespace root\virtualization\v2 -ClassName Msvm_ConcreteJob `
  -Filter ("InstanceID='{0}'" -f $p.job)
if (-not $j) { throw "WMI job $($p.job) no longer exists" }
@{ JobState = [int]$j.JobState; PercentComplete = [int]$j.PercentComplete;
   ErrorCode = [int]$j.ErrorCode; ErrorDescription = "$($j.ErrorDescription)";
   JobStatus = "$($j.JobStatus)" }
"""


def code_message(code: int) -> str:
    return SERVICE_CODES.get(code) or IMAGE_CODES.get(code) or "unknown error"


class WmiError(HypervisorError):
    """A WMI method or its job failed; `code` is the return value or the job's ErrorCode."""

    def __init__(self, what: str, code: int, description: str = "") -> None:
        meaning = code_message(code)
        detail = (
            f"{description.strip()} (error {code}: {meaning})"
            if description.strip()
            else (f"error {code}: {meaning}")
        )
        super().__init__(f"{what} failed: {detail}")
        self.code = code
        self.description = description


@dataclass(frozen=True)
class MethodResult:
    outputs: dict[str, Any]  # the script's other fields (ResultingSnapshot, ...)
    job: str  # the job's InstanceID ('' when the method finished at once)


class Wmi:
    """Calls methods through PowerShell scripts and waits for their jobs."""

    def __init__(
        self,
        ps: PowerShell,
        job_timeout_s: float = DEFAULT_JOB_TIMEOUT_S,
        poll_interval_s: float = POLL_INTERVAL_S,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ps = ps
        self.job_timeout_s = job_timeout_s
        self.poll_interval_s = poll_interval_s
        self.sleep = sleep
        self.clock = clock

    def call(
        self,
        op: str,
        body: str,
        params: Mapping[str, Any],
        what: str,
        timeout_s: float | None = None,
    ) -> MethodResult:
        """Run a script that invokes one method and returns `@{ReturnValue; Job; ...}`; wait
        for the job when there is one; WmiError for any failure code."""
        out = self.ps.run(op, body, params)
        if not isinstance(out, dict):
            raise HypervisorError(f"{what}: unexpected answer {str(out)[:200]!r}")
        code = as_int(out.get("ReturnValue"), -1)
        job = as_str(out.get("Job"))
        if code == RETURN_JOB_STARTED:
            if not job:
                raise HypervisorError(f"{what}: a job was started but not returned")
            self.wait(job, what, timeout_s)
        elif code != RETURN_OK:
            raise WmiError(what, code, as_str(out.get("ErrorDescription")))
        rest = {k: v for k, v in out.items() if k not in ("ReturnValue", "Job")}
        return MethodResult(rest, job if code == RETURN_JOB_STARTED else "")

    def wait(self, job: str, what: str, timeout_s: float | None = None) -> dict[str, Any]:
        """Poll the job until it ends; its final state, or WmiError / HypervisorError."""
        if not _JOB_ID.match(job):
            raise HypervisorError(f"{what}: unexpected WMI job id {job!r}")
        limit = timeout_s or self.job_timeout_s
        deadline = self.clock() + limit
        while True:
            state = self.ps.run("job-state", _JOB_STATE, {"job": job})
            if not isinstance(state, dict):
                raise HypervisorError(f"{what}: unexpected job state {str(state)[:200]!r}")
            code = as_int(state.get("JobState"), -1)
            if code == JOB_COMPLETED:
                return state
            if code not in JOB_RUNNING:
                error = as_int(state.get("ErrorCode"), 32768) or 32768
                name = JOB_STATES.get(code, f"state {code}")
                description = as_str(state.get("ErrorDescription")) or f"job {name}"
                raise WmiError(what, error, description)
            if self.clock() >= deadline:
                percent = as_int(state.get("PercentComplete"))
                raise HypervisorError(
                    f"{what}: the Hyper-V job did not finish within {limit:.0f} s "
                    f"({JOB_STATES.get(code, code)}, {percent} %)"
                )
            self.sleep(self.poll_interval_s)
