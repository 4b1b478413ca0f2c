"""Job wire models with the seed's field names. Secrets (access keys, repository password,
network-share credentials) are accepted on writes and answered only as `has_*` flags."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from e3backup.server.schemas.common import Id, ReadModel, WriteModel

Engine = Literal["disk_image", "kvm", "hyperv", "files", "sync"]
DestType = Literal["local", "s3"]
ScheduleType = Literal["manual", "hourly", "daily", "weekly", "cron"]
Secret = str | None
NotifyStatus = Literal["success", "warning", "partial_success", "failed", "cancelled"]
DEFAULT_NOTIFY_ON: tuple[NotifyStatus, ...] = ("failed", "partial_success", "warning")


class ScheduleSpec(WriteModel):
    type: ScheduleType = "manual"
    time: str | None = Field(default=None, pattern=r"^\d{2}:\d{2}$")  # daily/weekly HH:MM
    minute: int | None = Field(default=None, ge=0, le=59)  # hourly
    weekday: int | str | None = None  # weekly: 0=Monday..6 or mon..sun
    cron: str | None = Field(default=None, max_length=200)


class RetentionSpec(WriteModel):
    keep_last: int = Field(default=0, ge=0, le=100_000)
    keep_hourly: int = Field(default=0, ge=0, le=100_000)
    keep_daily: int = Field(default=0, ge=0, le=100_000)
    keep_weekly: int = Field(default=0, ge=0, le=100_000)
    keep_monthly: int = Field(default=0, ge=0, le=100_000)
    keep_yearly: int = Field(default=0, ge=0, le=100_000)


class PolicySpec(WriteModel):
    compression: str = Field(default="zstd", pattern=r"^(none|zstd|zstd-([1-9]|1[0-9]|2[0-2]))$")
    bandwidth_limit_kbps: int = Field(default=0, ge=0, le=100_000_000)
    parallelism: int = Field(default=4, ge=1, le=64)
    consistency_level: Literal["crash", "application"] = "application"
    enable_change_tracking: bool = True
    include_globs: list[str] = Field(default_factory=list, max_length=1000)
    exclude_globs: list[str] = Field(default_factory=list, max_length=1000)
    restore_parallel_workers: int = Field(default=4, ge=1, le=256)
    restore_segment_size_mb: int = Field(default=64, ge=1, le=65536)


class VmConfigSpec(WriteModel):
    """The seed's HyperVConfig for any hypervisor."""

    enable_rct: bool = True
    consistency_level: Literal["crash", "application"] = "application"
    quiesce_timeout: int = Field(default=300, ge=1, le=3600)


class NotifySpec(WriteModel):
    emails: list[str] = Field(default_factory=list, max_length=50)
    webhook_url: str | None = Field(default=None, max_length=2000)
    # write-only: signs each webhook POST (HMAC-SHA256); stored sealed, answered as a flag
    webhook_secret: str | None = Field(default=None, min_length=16, max_length=200)
    on: list[NotifyStatus] = Field(default_factory=lambda: list(DEFAULT_NOTIFY_ON))


class JobFields(WriteModel):
    name: str = Field(min_length=1, max_length=200)
    agent_id: Id
    engine: Engine
    source_path: str = Field(default="", max_length=2000)
    source_paths: list[str] = Field(default_factory=list, max_length=1000)
    disk_source_volume: str = Field(default="", max_length=1000)
    disk_image_format: Literal["", "raw", "vhdx", "qcow2"] = ""
    disk_temp_dir: str = Field(default="", max_length=1000)
    vm_config: VmConfigSpec | None = None
    vms: list[str] = Field(default_factory=list, max_length=1000)  # VM uuid or name
    network_username: Secret = Field(default=None, max_length=300)
    network_password: Secret = Field(default=None, max_length=1000)
    network_domain: str = Field(default="", max_length=200)
    dest_type: DestType
    dest_local_path: str = Field(default="", max_length=2000)
    dest_bucket: str = Field(default="", max_length=255)
    dest_prefix: str = Field(default="", max_length=1000)
    dest_endpoint: str = Field(default="", max_length=1000)
    dest_region: str = Field(default="", max_length=100)
    bucket_auto_create: bool = False
    access_key: Secret = Field(default=None, max_length=1000)
    secret_key: Secret = Field(default=None, max_length=1000)
    repository_password: Secret = Field(default=None, max_length=1000)
    schedule_json: ScheduleSpec = Field(default_factory=ScheduleSpec)
    retention_json: RetentionSpec = Field(default_factory=RetentionSpec)
    policy_json: PolicySpec = Field(default_factory=PolicySpec)
    timezone: str = Field(default="UTC", max_length=64)
    enabled: bool = True
    notify: NotifySpec | None = None


class JobCreate(JobFields):
    pass


class JobUpdate(WriteModel):
    """Every field optional: only the fields sent change. A secret sent as null is cleared."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    agent_id: Id | None = None
    engine: Engine | None = None
    source_path: str | None = Field(default=None, max_length=2000)
    source_paths: list[str] | None = Field(default=None, max_length=1000)
    disk_source_volume: str | None = Field(default=None, max_length=1000)
    disk_image_format: Literal["", "raw", "vhdx", "qcow2"] | None = None
    disk_temp_dir: str | None = Field(default=None, max_length=1000)
    vm_config: VmConfigSpec | None = None
    vms: list[str] | None = Field(default=None, max_length=1000)
    network_username: Secret = Field(default=None, max_length=300)
    network_password: Secret = Field(default=None, max_length=1000)
    network_domain: str | None = Field(default=None, max_length=200)
    dest_type: DestType | None = None
    dest_local_path: str | None = Field(default=None, max_length=2000)
    dest_bucket: str | None = Field(default=None, max_length=255)
    dest_prefix: str | None = Field(default=None, max_length=1000)
    dest_endpoint: str | None = Field(default=None, max_length=1000)
    dest_region: str | None = Field(default=None, max_length=100)
    bucket_auto_create: bool | None = None
    access_key: Secret = Field(default=None, max_length=1000)
    secret_key: Secret = Field(default=None, max_length=1000)
    repository_password: Secret = Field(default=None, max_length=1000)
    schedule_json: ScheduleSpec | None = None
    retention_json: RetentionSpec | None = None
    policy_json: PolicySpec | None = None
    timezone: str | None = Field(default=None, max_length=64)
    enabled: bool | None = None
    notify: NotifySpec | None = None


class JobOut(ReadModel):
    id: int
    tenant_id: Id
    agent_id: int | None
    name: str
    engine: str
    source_path: str
    source_paths: list[str]
    disk_source_volume: str
    disk_image_format: str
    disk_temp_dir: str
    vm_config: dict[str, Any] | None
    vms: list[Any]
    network_domain: str
    has_network_credentials: bool
    dest_type: str
    dest_local_path: str
    dest_bucket: str
    dest_prefix: str
    dest_endpoint: str
    dest_region: str
    bucket_auto_create: bool
    has_access_key: bool
    has_secret_key: bool
    has_repository_password: bool
    schedule_json: dict[str, Any] | None
    retention_json: dict[str, Any] | None
    policy_json: dict[str, Any] | None
    timezone: str
    enabled: bool
    notify: dict[str, Any] | None
    next_run_at: datetime | None
    last_slot_at: datetime | None
    created_at: datetime
    updated_at: datetime
