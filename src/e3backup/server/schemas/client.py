"""Client API wire models for agents, VMs, commands, sign-in and enrollment tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from e3backup.server.schemas.common import Id, ReadModel, WriteModel


class AgentOut(ReadModel):
    id: int
    tenant_id: Id
    hostname: str
    os: str
    arch: str
    version: str
    status: str
    online: bool
    last_seen_at: datetime | None
    created_at: datetime
    enrolled_via: str


class VmDiskOut(ReadModel):
    id: int
    disk_path: str
    disk_name: str
    controller_type: str
    vhd_format: str
    size_bytes: int


class VmOut(ReadModel):
    id: int
    agent_id: Id
    vm_name: str = Field(validation_alias="name")
    vm_guid: str = Field(validation_alias="vm_uuid")
    hypervisor: str
    state: str
    generation: str
    rct_enabled: bool = Field(validation_alias="change_tracking")
    present: bool
    last_seen_at: datetime
    disks: list[VmDiskOut] = Field(default_factory=list)


class AgentDetail(AgentOut):
    volumes: list[Any] = Field(default_factory=list)
    volumes_reported_at: datetime | None
    vms: list[VmOut] = Field(default_factory=list)


class CommandOut(ReadModel):
    id: int
    agent_id: Id
    type: str
    status: str
    run_id: int | None
    job_id: int | None
    result: dict[str, Any] | list[Any] | None = Field(default=None, validation_alias="result_json")
    error: str | None
    created_at: datetime
    delivered_at: datetime | None
    completed_at: datetime | None
    expires_at: datetime


class BrowseRequest(WriteModel):
    path: str = Field(default="", max_length=4000)
    wait_s: float = Field(default=30.0, ge=0, le=30)


class MaintenanceRequest(WriteModel):
    kind: Literal["quick", "full"] = "quick"


class LoginRequest(WriteModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)


class MeOut(BaseModel):
    user_id: int | None
    email: str
    role: str
    tenant_id: Id
    tenant_ids: list[int]


class LoginAnswer(MeOut):
    csrf_token: str
    expires_in_s: float


class TenantSwitch(WriteModel):
    tenant_id: Id


class EnrollmentTokenCreate(WriteModel):
    tenant_id: Id | None = None
    expires_in_s: float | None = Field(default=86_400, gt=0, le=366 * 86_400)
    max_uses: int | None = Field(default=None, ge=1, le=1_000_000)
    description: str = Field(default="", max_length=200)


class EnrollmentTokenOut(BaseModel):
    id: int
    tenant_id: Id
    token: str
    expires_at: datetime | None
    max_uses: int | None
