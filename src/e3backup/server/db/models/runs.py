"""Runs (backup and restore executions), their events and log lines, backup points and
recovery sessions.

A run's status moves only forward: queued → starting → running → one terminal status.
`UNIQUE(job_id, scheduled_for)` makes a schedule slot fire once across replicas; a partial
unique index keeps a job to one active backup run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from e3backup.server.db.base import Base, utcnow

ACTIVE_STATUSES = ("queued", "starting", "running")
TERMINAL_STATUSES = ("success", "warning", "partial_success", "failed", "cancelled")
RUN_STATUSES = ACTIVE_STATUSES + TERMINAL_STATUSES
RUN_TYPES = ("backup", "restore", "hyperv_restore")
TRIGGERS = ("manual", "schedule", "restore", "recovery")

_ACTIVE_BACKUP = "run_type = 'backup' AND status IN ('queued', 'starting', 'running')"
# finished runs the notification loop has not looked at yet (a small, shrinking set)
_NOTIFY_PENDING = (
    "notified_at IS NULL AND status IN "
    "('success', 'warning', 'partial_success', 'failed', 'cancelled')"
)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("job_id", "scheduled_for", name="uq_runs_job_slot"),
        Index("ix_runs_agent_status", "agent_id", "status"),
        Index("ix_runs_status_heartbeat", "status", "heartbeat_at"),
        Index("ix_runs_job_created", "job_id", "created_at"),
        Index("ix_runs_tenant_created", "tenant_id", "created_at"),
        Index(
            "uq_runs_one_active_backup",
            "job_id",
            unique=True,
            sqlite_where=text(_ACTIVE_BACKUP),
            postgresql_where=text(_ACTIVE_BACKUP),
        ),
        Index(
            "ix_runs_notify_pending",
            "id",
            sqlite_where=text(_NOTIFY_PENDING),
            postgresql_where=text(_NOTIFY_PENDING),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="RESTRICT"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="RESTRICT"))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    run_type: Mapped[str] = mapped_column(String(20), default="backup")
    engine: Mapped[str] = mapped_column(String(20), default="")
    status: Mapped[str] = mapped_column(String(20), default="queued")
    trigger: Mapped[str] = mapped_column(String(20), default="manual")
    scheduled_for: Mapped[datetime | None]
    requested_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    cancel_requested_at: Mapped[datetime | None]

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]

    progress_pct: Mapped[float | None] = mapped_column(Float)
    bytes_transferred: Mapped[int | None] = mapped_column(BigInteger)
    bytes_processed: Mapped[int | None] = mapped_column(BigInteger)
    bytes_total: Mapped[int | None] = mapped_column(BigInteger)
    objects_transferred: Mapped[int | None] = mapped_column(BigInteger)
    objects_total: Mapped[int | None] = mapped_column(BigInteger)
    speed_bytes_per_sec: Mapped[int | None] = mapped_column(BigInteger)
    eta_seconds: Mapped[int | None] = mapped_column(BigInteger)
    current_item: Mapped[str | None] = mapped_column(String(2000))
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(100))
    log_ref: Mapped[str | None] = mapped_column(String(1000))

    disk_manifests_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    vm_results_json: Mapped[list[Any] | None] = mapped_column(JSON)
    source_results_json: Mapped[list[Any] | None] = mapped_column(JSON)
    stats_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # repository stats
    result_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    restore_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # restore parameters
    notified_at: Mapped[datetime | None]


class RunEvent(Base):
    """Structured events; `event_id` is chosen by the agent so a retried push is a no-op."""

    __tablename__ = "run_events"
    __table_args__ = (
        UniqueConstraint("run_id", "event_id", name="uq_run_events_run_event"),
        Index("ix_run_events_run_id_id", "run_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(100))
    ts: Mapped[datetime]
    type: Mapped[str] = mapped_column(String(50), default="info")
    level: Mapped[str] = mapped_column(String(20), default="info")
    message_id: Mapped[str] = mapped_column(String(100))
    params_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(20), default="agent")  # agent | server
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RunLog(Base):
    __tablename__ = "run_logs"
    __table_args__ = (Index("ix_run_logs_run_id_id", "run_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    ts: Mapped[datetime]
    level: Mapped[str] = mapped_column(String(20), default="info")
    message: Mapped[str] = mapped_column(Text)


class BackupPoint(Base):
    """One restorable point per VM (kvm/hyperv) or per source (disk_image/files); seed 001."""

    __tablename__ = "backup_points"
    __table_args__ = (
        Index("ix_backup_points_tenant_created", "tenant_id", "created_at"),
        Index("ix_backup_points_job", "job_id"),
        Index("ix_backup_points_vm", "vm_id"),
        Index("ix_backup_points_agent", "agent_id"),
        UniqueConstraint("run_id", "source_key", name="uq_backup_points_run_source"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    vm_id: Mapped[int | None] = mapped_column(ForeignKey("vms.id", ondelete="SET NULL"))
    engine: Mapped[str] = mapped_column(String(20))
    source_key: Mapped[str] = mapped_column(String(1000))  # VM uuid or source path
    source_name: Mapped[str] = mapped_column(String(1000), default="")
    backup_type: Mapped[str] = mapped_column(String(20), default="Full")
    snapshot_id: Mapped[str] = mapped_column(String(200), default="")
    manifest_id: Mapped[str] = mapped_column(String(200), default="")
    parent_backup_id: Mapped[int | None] = mapped_column(
        ForeignKey("backup_points.id", ondelete="SET NULL")
    )
    disk_manifests_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    change_tokens_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # seed rct_ids
    disk_count: Mapped[int] = mapped_column(default=0)
    total_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    changed_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    consistency_level: Mapped[str | None] = mapped_column(String(50))
    has_warnings: Mapped[bool] = mapped_column(default=False)
    warnings_json: Mapped[list[Any] | None] = mapped_column(JSON)
    warning_code: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RecoverySession(Base):
    """Seed 003: a token bound to one restore run, expiry sliding +6 h near its end."""

    __tablename__ = "recovery_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    backup_point_id: Mapped[int | None] = mapped_column(
        ForeignKey("backup_points.id", ondelete="SET NULL")
    )
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    created_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
