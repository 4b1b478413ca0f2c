"""Audit log: one row per change a person or agent made (jobs, restores, tokens, agents)."""

from __future__ import annotations

from typing import Any

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
