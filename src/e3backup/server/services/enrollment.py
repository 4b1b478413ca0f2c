"""Agent enrollment: by an enrollment token (MSP/RMM installs) or by a user's e-mail and
password (the seed's tray flow). Either way the agent gets an id and a fresh token once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from e3backup.server.db.base import utcnow
from e3backup.server.db.models import Agent, EnrollmentToken
from e3backup.server.services import audit, users
from e3backup.server.services.auth import Actor
from e3backup.server.services.errors import Forbidden, Invalid, NotFound, Unauthorized
from e3backup.server.services.tokens import hash_token, new_token

ENROLLMENT_PREFIX = "e3e"
AGENT_TOKEN_PREFIX = "e3a"


@dataclass(frozen=True)
class AgentIdentity:
    hostname: str = ""
    os: str = ""
    arch: str = ""
    version: str = ""
    device_id: str = ""


def create_enrollment_token(
    db: Session,
    tenant_id: int,
    expires_in_s: float | None,
    max_uses: int | None,
    actor: Actor | None = None,
    description: str = "",
) -> tuple[EnrollmentToken, str]:
    if max_uses is not None and max_uses < 1:
        raise Invalid("max_uses must be at least 1", "max_uses")
    if expires_in_s is not None and expires_in_s <= 0:
        raise Invalid("expires_in must be positive", "expires_in")
    secret, digest = new_token(ENROLLMENT_PREFIX)
    expires_at: datetime | None = (
        utcnow() + timedelta(seconds=expires_in_s) if expires_in_s is not None else None
    )
    token = EnrollmentToken(
        tenant_id=tenant_id,
        token_hash=digest,
        expires_at=expires_at,
        max_uses=max_uses,
        description=description,
        created_by_user_id=actor.user_id if actor else None,
    )
    db.add(token)
    db.flush()
    return token, secret


def issue_token(
    db: Session,
    actor: Actor,
    tenant_id: int | None,
    expires_in_s: float | None,
    max_uses: int | None,
    description: str = "",
) -> tuple[EnrollmentToken, str]:
    """An admin's enrollment token for a tenant it sees (default: its current one), audited;
    the secret is returned once (API and UI)."""
    actor.require("admin")
    tenant_id = tenant_id if tenant_id is not None else actor.tenant_id
    if not actor.sees(tenant_id):
        raise NotFound("tenant not found")
    token, secret = create_enrollment_token(
        db, tenant_id, expires_in_s, max_uses, actor, description
    )
    audit.record(db, actor, "enrollment_token.create", "enrollment_token", token.id, tenant_id)
    return token, secret


def _claim_token_use(db: Session, secret: str) -> int:
    """Count one use atomically (a conditional UPDATE); the tenant id, else Unauthorized."""
    now = utcnow()
    token = db.scalar(
        select(EnrollmentToken).where(EnrollmentToken.token_hash == hash_token(secret))
    )
    bad = Unauthorized("invalid, expired or used-up enrollment token")
    if token is None or token.revoked_at is not None:
        raise bad
    if token.expires_at is not None and token.expires_at <= now:
        raise bad
    claim = (
        update(EnrollmentToken)
        .where(EnrollmentToken.id == token.id, EnrollmentToken.uses == token.uses)
        .values(uses=EnrollmentToken.uses + 1)
    )
    if token.max_uses is not None:
        claim = claim.where(EnrollmentToken.uses < token.max_uses)
    if db.execute(claim).rowcount != 1:  # type: ignore[attr-defined]
        raise bad
    return token.tenant_id


def _new_agent(db: Session, tenant_id: int, who: AgentIdentity, via: str) -> tuple[Agent, str]:
    secret, digest = new_token(AGENT_TOKEN_PREFIX)
    agent = Agent(
        tenant_id=tenant_id,
        token_hash=digest,
        hostname=who.hostname[:255],
        os=who.os[:100],
        arch=who.arch[:50],
        version=who.version[:50],
        device_id=who.device_id[:200],
        enrolled_via=via,
        last_seen_at=utcnow(),
    )
    db.add(agent)
    db.flush()
    return agent, secret


def enroll_with_token(db: Session, secret: str, who: AgentIdentity) -> tuple[Agent, str]:
    return _new_agent(db, _claim_token_use(db, secret), who, "token")


def enroll_with_password(
    db: Session, email: str, password: str, who: AgentIdentity
) -> tuple[Agent, str]:
    user = users.authenticate(db, email, password)
    if user.role == "viewer":
        raise Forbidden("a viewer cannot enroll agents")
    return _new_agent(db, user.tenant_id, who, "password")
