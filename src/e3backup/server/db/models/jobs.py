"""Backup jobs (seed s3_cloudbackup_jobs, local-agent columns). Secrets are `*_enc` columns
holding SecretBox ciphertext; they are decrypted only for the owning agent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from e3backup.server.db.base import Base, utcnow

ENGINES = ("disk_image", "kvm", "hyperv", "files", "sync")
VM_ENGINES = ("kvm", "hyperv")
DEST_TYPES = ("local", "s3")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_tenant", "tenant_id"),
        Index("ix_jobs_agent", "agent_id"),
        Index("ix_jobs_due", "enabled", "next_run_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="RESTRICT"))
    # NULL once its agent was deleted (the job stays, disabled, for its history).
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(200))
    engine: Mapped[str] = mapped_column(String(20))

    source_path: Mapped[str] = mapped_column(String(2000), default="")
    source_paths_json: Mapped[list[str] | None] = mapped_column(JSON)
    disk_source_volume: Mapped[str] = mapped_column(String(1000), default="")
    disk_image_format: Mapped[str] = mapped_column(String(20), default="")
    disk_temp_dir: Mapped[str] = mapped_column(String(1000), default="")
    vm_config_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # seed HyperVConfig
    vms_json: Mapped[list[Any] | None] = mapped_column(JSON)  # chosen VMs: ids/uuids/names
    network_username_enc: Mapped[str | None] = mapped_column(Text)
    network_password_enc: Mapped[str | None] = mapped_column(Text)
    network_domain: Mapped[str] = mapped_column(String(200), default="")

    dest_type: Mapped[str] = mapped_column(String(10))
    dest_local_path: Mapped[str] = mapped_column(String(2000), default="")
    dest_bucket: Mapped[str] = mapped_column(String(255), default="")
    dest_prefix: Mapped[str] = mapped_column(String(1000), default="")
    dest_endpoint: Mapped[str] = mapped_column(String(1000), default="")
    dest_region: Mapped[str] = mapped_column(String(100), default="")
    bucket_auto_create: Mapped[bool] = mapped_column(default=False)
    dest_access_key_enc: Mapped[str | None] = mapped_column(Text)
    dest_secret_key_enc: Mapped[str | None] = mapped_column(Text)
    repository_password_enc: Mapped[str | None] = mapped_column(Text)

    schedule_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    retention_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    policy_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    enabled: Mapped[bool] = mapped_column(default=True)
    notify_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # emails, webhook, on

    next_run_at: Mapped[datetime | None]  # scheduler: the next slot to fire
    last_slot_at: Mapped[datetime | None]  # scheduler: the last slot fired
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None]  # soft delete: runs and backup points stay readable
