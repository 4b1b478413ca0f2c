"""Agents (one per host) and the VMs and disks they report (seed s3_hyperv_vms / _vm_disks)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from e3backup.server.db.base import Base, utcnow

AGENT_STATUSES = ("enabled", "disabled")


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (Index("ix_agents_tenant_last_seen", "tenant_id", "last_seen_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="RESTRICT"))
    hostname: Mapped[str] = mapped_column(String(255), default="")
    os: Mapped[str] = mapped_column(String(100), default="")
    arch: Mapped[str] = mapped_column(String(50), default="")
    version: Mapped[str] = mapped_column(String(50), default="")
    device_id: Mapped[str] = mapped_column(String(200), default="")
    token_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="enabled")
    enrolled_via: Mapped[str] = mapped_column(String(20), default="token")  # token | password
    last_seen_at: Mapped[datetime | None]
    last_ip: Mapped[str] = mapped_column(String(64), default="")
    volumes_json: Mapped[list[Any] | None] = mapped_column(JSON)
    volumes_reported_at: Mapped[datetime | None]
    vms_reported_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Vm(Base):
    __tablename__ = "vms"
    __table_args__ = (UniqueConstraint("agent_id", "vm_uuid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    vm_uuid: Mapped[str] = mapped_column(String(200))  # the hypervisor's id (seed vm_guid)
    name: Mapped[str] = mapped_column(String(255))
    hypervisor: Mapped[str] = mapped_column(String(20), default="kvm")  # kvm | hyperv
    state: Mapped[str] = mapped_column(String(50), default="")
    generation: Mapped[str] = mapped_column(String(50), default="")  # generation / machine type
    change_tracking: Mapped[bool] = mapped_column(default=False)  # seed rct_enabled
    info_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    present: Mapped[bool] = mapped_column(default=True)  # false: missing from the last report
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class VmDisk(Base):
    __tablename__ = "vm_disks"
    __table_args__ = (UniqueConstraint("vm_id", "disk_path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"))
    disk_path: Mapped[str] = mapped_column(String(1000))
    disk_name: Mapped[str] = mapped_column(String(255), default="")
    controller_type: Mapped[str] = mapped_column(String(50), default="")
    vhd_format: Mapped[str] = mapped_column(String(50), default="")
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    change_token: Mapped[str | None] = mapped_column(String(500))  # last reported (seed rct_id)
