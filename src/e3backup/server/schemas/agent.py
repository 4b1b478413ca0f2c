"""Agent API wire models (seed agent_* endpoints)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from e3backup.server.schemas.common import Id, WriteModel


class EnrollRequest(WriteModel):
    """By `enrollment_token`, or by a user's `email` + `password` (the seed's tray flow)."""

    enrollment_token: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    password: str | None = Field(default=None, max_length=1024)
    hostname: str = Field(default="", max_length=255)
    os: str = Field(default="", max_length=100)
    arch: str = Field(default="", max_length=50)
    version: str = Field(default="", max_length=50)
    device_id: str = Field(default="", max_length=200)


class EnrollAnswer(BaseModel):
    agent_id: Id
    agent_token: str
    tenant_id: Id
    poll_interval_s: float


class NextRunRequest(WriteModel):
    pass


class PollCommandsRequest(WriteModel):
    run_id: Id | None = None


class PollCommandsAnswer(BaseModel):
    commands: list[dict[str, Any]]
    cancel_requested: bool


class PollRequest(WriteModel):
    """The combined poll: `claim` asks for a run as next_run does (an agent busy with a backup
    sends false); `run_id` is the run whose cancel flag the agent wants, as in poll_commands."""

    run_id: Id | None = None
    claim: bool = True


class PollAnswer(BaseModel):
    run: dict[str, Any] | None = Field(description="next_run's NextRunResponse, or null")
    commands: list[dict[str, Any]]
    cancel_requested: bool


class CompleteCommand(WriteModel):
    command_id: Id
    status: Literal["completed", "failed"] = "completed"
    result: dict[str, Any] | list[Any] | None = None
    error: str | None = Field(default=None, max_length=10_000)


class ReportVms(WriteModel):
    vms: list[dict[str, Any]] = Field(max_length=10_000)
    command_id: Id | None = None  # the list_vms command this answers, if any


class ReportVolumes(WriteModel):
    volumes: list[dict[str, Any]] = Field(max_length=10_000)


class ReportBrowse(WriteModel):
    command_id: Id
    path: str = Field(default="", max_length=4000)
    entries: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)
    error: str | None = Field(default=None, max_length=10_000)


class Ok(BaseModel):
    status: str = "success"
