"""Tenants and their MSP tree: a tenant's users see it and every descendant tenant."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from e3backup.server.db.models import Tenant, User
from e3backup.server.services.errors import Conflict, Invalid, NotFound

MAX_NAME_CHARS = 200


def create_tenant(db: Session, name: str, parent_name: str | None = None) -> Tenant:
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS:
        raise Invalid(f"tenant name must be 1 to {MAX_NAME_CHARS} characters", "name")
    if db.scalar(select(Tenant.id).where(Tenant.name == name)) is not None:
        raise Conflict(f"tenant {name!r} already exists")
    parent = tenant_by_name(db, parent_name) if parent_name else None
    tenant = Tenant(name=name, parent_id=parent.id if parent else None)
    db.add(tenant)
    db.flush()
    return tenant


def tenant_by_name(db: Session, name: str) -> Tenant:
    tenant = db.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise NotFound(f"no tenant named {name!r}")
    return tenant


def visible_tenant_ids(db: Session, tenant_id: int) -> frozenset[int]:
    """The tenant and all its descendants (breadth-first; one query per tree level)."""
    seen = {tenant_id}
    frontier = [tenant_id]
    while frontier:
        children = db.scalars(select(Tenant.id).where(Tenant.parent_id.in_(frontier))).all()
        frontier = [c for c in children if c not in seen]
        seen.update(frontier)
    return frozenset(seen)


def list_tenants(db: Session, tenant_ids: frozenset[int]) -> list[Tenant]:
    return list(db.scalars(select(Tenant).where(Tenant.id.in_(tenant_ids)).order_by(Tenant.id)))


def switchable_tenants(db: Session, user_id: int | None) -> list[Tenant]:
    """What the MSP tenant switcher offers: the user's own tenant and every descendant."""
    user = db.get(User, user_id) if user_id is not None else None
    if user is None:
        return []
    return list_tenants(db, visible_tenant_ids(db, user.tenant_id))
