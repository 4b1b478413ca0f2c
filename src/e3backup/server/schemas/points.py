"""Backup points (seed 001 shape) and restore requests/answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from e3backup.server.schemas.common import Id, WriteModel


class BackupPointOut(BaseModel):
    id: int
    run_id: Id
    job_id: int | None
    agent_id: int | None
    vm_id: int | None
    engine: str
    source: str
    source_name: str
    backup_type: str
    snapshot_id: str
    manifest_id: str
    parent_backup_id: int | None
    disk_manifests: dict[str, Any]
    change_tokens: dict[str, Any]
    disk_count: int
    total_size_bytes: int | None
    changed_size_bytes: int | None
    duration_seconds: float | None
    consistency_level: str | None
    created_at: datetime
    has_warnings: bool
    warning_code: str | None
    warnings: list[Any]
    restore_chain: list[str]
    restore_chain_length: int
    is_restorable: bool


class RestoreRequest(WriteModel):
    backup_point_id: Id | None = None
    job_id: Id | None = None  # with snapshot_id, when no backup point is known
    snapshot_id: str | None = Field(default=None, max_length=200)
    target_path: str = Field(default="", max_length=2000)
    disk_filter: list[str] = Field(default_factory=list, max_length=1000)
    format: Literal["raw", "vhdx", "qcow2"] = "raw"
    agent_id: Id | None = None  # restore on another agent of the same tenant


class RestoreStarted(BaseModel):
    status: str = "success"
    message: str
    restore_run_id: int
    restore_run_uuid: str
    command_id: Id
    job_id: int | None
    vm_name: str | None
    disks_to_restore: int
    estimated_size_bytes: int | None
    backup_type: str
    restore_chain_length: int
