"""Commands to agents (seed s3_cloudbackup_run_commands): pending → delivered → completed |
failed | expired. Secrets a command needs beyond its job's live in `secrets_enc`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from e3backup.server.db.base import Base, utcnow

COMMAND_TYPES = (
    "cancel",
    "maintenance_quick",
    "maintenance_full",
    "restore",
    "hyperv_restore",
    "list_vms",
    "browse_directory",
    "test_destination",
    "nas_mount",
    "nas_unmount",
)
COMMAND_STATUSES = ("pending", "delivered", "completed", "failed", "expired")
OPEN_COMMAND_STATUSES = ("pending", "delivered")


class Command(Base):
    __tablename__ = "commands"
    __table_args__ = (
        Index("ix_commands_agent_status", "agent_id", "status"),
        Index("ix_commands_status_expires", "status", "expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    payload_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    secrets_enc: Mapped[str | None] = mapped_column(Text)
    result_json: Mapped[dict[str, Any] | list[Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    requested_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    expires_at: Mapped[datetime]
