"""Audit log: one row per change a person or agent made (jobs, restores, tokens, agents), and
its admin-only read."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from e3backup.server.db.models import AuditEntry
from e3backup.server.services.auth import Actor


def record(
    db: Session,
    actor: Actor | None,
    action: str,
    target_type: str = "",
    target_id: int | str = "",
    tenant_id: int | None = None,
    details: dict[str, Any] | None = None,
    ip: str = "",
) -> None:
    """Add an entry in the caller's transaction; `details` must hold no secrets."""
    db.add(
        AuditEntry(
            tenant_id=tenant_id if tenant_id is not None else (actor.tenant_id if actor else None),
            actor_type=actor.kind if actor else "system",
            actor_id=actor.user_id if actor else None,
            actor_label=actor.label if actor else "",
            action=action,
            target_type=target_type,
            target_id=str(target_id),
            details_json=details,
            ip=ip,
        )
    )


def list_entries(
    db: Session, actor: Actor, action: str | None, limit: int, offset: int
) -> tuple[list[AuditEntry], int]:
    """The audit log of the actor's tenants, newest first (admin only); `action` filters
    exactly (e.g. job.create)."""
    actor.require("admin")
    where: list[Any] = [AuditEntry.tenant_id.in_(actor.tenant_ids)]
    if action:
        where.append(AuditEntry.action == action)
    total = db.scalar(select(func.count()).select_from(AuditEntry).where(*where)) or 0
    rows = db.scalars(
        select(AuditEntry).where(*where).order_by(AuditEntry.id.desc()).limit(limit).offset(offset)
    )
    return list(rows), total


def action_names(db: Session, actor: Actor) -> list[str]:
    """The actions present in the actor's audit log (for a filter)."""
    actor.require("admin")
    query = (
        select(AuditEntry.action)
        .where(AuditEntry.tenant_id.in_(actor.tenant_ids))
        .distinct()
        .order_by(AuditEntry.action)
    )
    return list(db.scalars(query))
