"""Run wire models: the agent's RunUpdate (seed names), events and logs, client read models."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from e3backup.server.schemas.common import Id, ReadModel, WriteModel

AgentStatus = Literal[
    "starting", "running", "success", "warning", "partial_success", "failed", "cancelled"
]
BIG = 2**62


class RunUpdate(WriteModel):
    """Seed RunUpdate. A field left out (or null) is left alone; a 0 is stored as 0."""

    run_id: Id
    status: AgentStatus | None = None
    progress_pct: float | None = Field(default=None, ge=0, le=100)
    bytes_transferred: int | None = Field(default=None, ge=0, le=BIG)
    bytes_processed: int | None = Field(default=None, ge=0, le=BIG)
    bytes_total: int | None = Field(default=None, ge=0, le=BIG)
    objects_transferred: int | None = Field(default=None, ge=0, le=BIG)
    objects_total: int | None = Field(default=None, ge=0, le=BIG)
    speed_bytes_per_sec: int | None = Field(default=None, ge=0, le=BIG)
    eta_seconds: int | None = Field(default=None, ge=0, le=BIG)
    current_item: str | None = Field(default=None, max_length=2000)
    error: str | None = Field(default=None, max_length=10_000)
    error_code: str | None = Field(default=None, max_length=100)
    log_ref: str | None = Field(default=None, max_length=1000)
    disk_manifests_json: dict[str, Any] | None = None
    vm_results: list[dict[str, Any]] | None = Field(default=None, max_length=10_000)
    source_results: list[dict[str, Any]] | None = Field(default=None, max_length=10_000)
    snapshot_id: str | None = Field(default=None, max_length=200)
    backup_type: str | None = Field(default=None, max_length=20)
    repository_stats: dict[str, Any] | None = None
    result: dict[str, Any] | None = None


class RunUpdateAnswer(BaseModel):
    status: str
    cancel_requested: bool
    applied: bool


class EventIn(WriteModel):
    event_id: str = Field(min_length=1, max_length=100)
    ts: datetime | None = None
    type: str = Field(default="info", max_length=50)
    level: Literal["debug", "info", "warn", "warning", "error"] = "info"
    message_id: str = Field(min_length=1, max_length=100)
    params: dict[str, Any] = Field(default_factory=dict)


class PushEvents(WriteModel):
    run_id: Id
    events: list[EventIn] = Field(max_length=1000)


class PushEventsAnswer(BaseModel):
    accepted: int
    duplicates: int


class LogLineIn(WriteModel):
    ts: datetime | None = None
    level: str = Field(default="info", max_length=20)
    message: str = Field(max_length=10_000)


class PushLogs(WriteModel):
    run_id: Id
    lines: list[LogLineIn] = Field(max_length=5000)


class RunOut(ReadModel):
    id: int
    uuid: str
    tenant_id: Id
    job_id: int | None
    agent_id: int | None
    run_type: str
    engine: str
    status: str
    trigger: str
    scheduled_for: datetime | None
    cancel_requested: bool
    created_at: datetime
    claimed_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    progress_pct: float | None
    bytes_transferred: int | None
    bytes_processed: int | None
    bytes_total: int | None
    objects_transferred: int | None
    objects_total: int | None
    speed_bytes_per_sec: int | None
    eta_seconds: int | None
    current_item: str | None
    error: str | None
    error_code: str | None
    disk_manifests_json: dict[str, Any] | None
    vm_results: list[Any] | None = Field(default=None, validation_alias="vm_results_json")
    stats_json: dict[str, Any] | None
    restore: dict[str, Any] | None = Field(default=None, validation_alias="restore_json")


class RunEventOut(ReadModel):
    id: int
    run_id: Id
    event_id: str
    ts: datetime
    type: str
    level: str
    message_id: str
    params: dict[str, Any] | None
    message: str


class RunLogOut(ReadModel):
    id: int
    ts: datetime
    level: str
    message: str
