"""What the agent reads from the agent API, validated (a partial or malformed answer is a
`BadResponse`, never a crash). Unknown fields are ignored: newer servers may send more. Secret
fields are left out of reprs so they never reach a log line."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


def secret() -> Any:
    return Field(default=None, repr=False)


class EnrollAnswer(Wire):
    agent_id: int
    agent_token: str = Field(repr=False)
    tenant_id: int | None = None
    poll_interval_s: float = 5.0


class VmRef(Wire):
    vm_ref: str = ""
    vm_id: int | None = None
    vm_name: str = ""
    vm_guid: str = ""
    rct_ids: dict[str, str] = Field(default_factory=dict)
    last_snapshot_id: str | None = None


class JobContext(Wire):
    """The job's context as the server sends it with a run or a command (seed names)."""

    job_id: int | None = None
    job_name: str = ""
    engine: str = ""
    source_path: str | None = ""
    source_paths: list[str] = Field(default_factory=list)
    disk_source_volume: str | None = ""
    dest_type: str = "local"
    repository: str | None = ""
    dest_local_path: str | None = ""
    dest_bucket: str | None = ""
    dest_prefix: str | None = ""
    dest_endpoint: str | None = ""
    dest_region: str | None = ""
    bucket_auto_create: bool = False
    dest_access_key: str | None = secret()
    dest_secret_key: str | None = secret()
    repository_password: str | None = secret()
    policy_json: dict[str, Any] = Field(default_factory=dict)
    retention_json: dict[str, Any] | None = None
    vm_config: dict[str, Any] | None = None


class RunAssignment(JobContext):
    """The seed's NextRunResponse."""

    run_id: int
    run_uuid: str = ""
    run_type: str = "backup"
    status: str = ""
    reclaimed: bool = False
    cancel_requested: bool = False
    vms: list[VmRef] = Field(default_factory=list)


class AgentCommand(Wire):
    command_id: int | None = None
    type: str
    run_id: int | None = None
    job_id: int | None = None
    payload: dict[str, Any] = Field(default_factory=dict, repr=False)
    job: JobContext | None = None


class PollAnswer(Wire):
    commands: list[dict[str, Any]] = Field(default_factory=list, repr=False)
    cancel_requested: bool = False


class CombinedPollAnswer(PollAnswer):
    run: dict[str, Any] | None = Field(default=None, repr=False)  # a RunAssignment, checked alone


class UpdateAnswer(Wire):
    status: str
    cancel_requested: bool = False
    applied: bool = True
