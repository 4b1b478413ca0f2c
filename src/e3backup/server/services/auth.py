"""Who is calling: API tokens (Bearer), UI sessions (cookie + CSRF), roles, failure limits.

An `Actor` carries the tenants its user may see (its own and, for an MSP, the descendants);
every service filters on `actor.tenant_ids`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from e3backup.server.db.base import utcnow
from e3backup.server.db.models import ApiToken, User, UserSession
from e3backup.server.services import tenants, users
from e3backup.server.services.errors import Forbidden, NotFound, RateLimited, Unauthorized
from e3backup.server.services.tokens import hash_token, new_token, same_hash

ROLE_RANK = {"viewer": 0, "operator": 1, "admin": 2}
API_TOKEN_PREFIX = "e3t"
SESSION_PREFIX = "e3s"


@dataclass(frozen=True)
class Actor:
    kind: str  # user | api_token | cli
    user_id: int | None
    tenant_id: int
    tenant_ids: frozenset[int]
    role: str
    label: str

    def allows(self, role: str) -> bool:
        """The one role rule: `require` enforces it, the UI hides what it refuses."""
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    def require(self, role: str) -> None:
        if not self.allows(role):
            raise Forbidden(f"this needs the {role} role (you are {self.role})")

    def sees(self, tenant_id: int) -> bool:
        return tenant_id in self.tenant_ids


def actor_for_user(db: Session, user: User, kind: str) -> Actor:
    return Actor(
        kind=kind,
        user_id=user.id,
        tenant_id=user.tenant_id,
        tenant_ids=tenants.visible_tenant_ids(db, user.tenant_id),
        role=user.role,
        label=user.email,
    )


def create_api_token(db: Session, user: User, name: str = "") -> tuple[ApiToken, str]:
    secret, digest = new_token(API_TOKEN_PREFIX)
    token = ApiToken(user_id=user.id, name=name, token_hash=digest)
    db.add(token)
    db.flush()
    return token, secret


def actor_from_api_token(db: Session, secret: str) -> Actor:
    row = db.execute(
        select(ApiToken, User)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == hash_token(secret))
    ).first()
    if row is None or row[0].revoked_at is not None or not row[1].is_active:
        raise Unauthorized("invalid or revoked API token")
    token, user = row
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        token.last_used_at = now
    return actor_for_user(db, user, "api_token")


@dataclass(frozen=True)
class NewSession:
    session_token: str
    csrf_token: str
    expires_in_s: float


def create_session(db: Session, user: User, ttl_s: float) -> NewSession:
    session_token, token_hash = new_token(SESSION_PREFIX)
    csrf_token, csrf_hash = new_token("csrf")
    db.add(
        UserSession(
            user_id=user.id,
            token_hash=token_hash,
            csrf_hash=csrf_hash,
            expires_at=utcnow() + timedelta(seconds=ttl_s),
        )
    )
    db.flush()
    return NewSession(session_token, csrf_token, ttl_s)


def sign_in(
    db: Session, limiter: FailureLimiter, ip: str, email: str, password: str, ttl_s: float
) -> tuple[User, NewSession]:
    """Check the password (failures counted per address and per e-mail) and open a session;
    one message for an unknown e-mail and a wrong password."""
    keys = (f"login:{ip}", f"login:{email.lower()[:320]}")
    limiter.check(*keys)
    try:
        user = users.authenticate(db, email, password)
    except Unauthorized:
        limiter.failed(*keys)
        raise
    return user, create_session(db, user, ttl_s)


def actor_from_session(
    db: Session, session_token: str, csrf_token: str | None, unsafe_method: bool
) -> Actor:
    """The session's user; an unsafe method also needs the matching CSRF token."""
    row = db.execute(
        select(UserSession, User)
        .join(User, User.id == UserSession.user_id)
        .where(UserSession.token_hash == hash_token(session_token))
    ).first()
    if row is None:
        raise Unauthorized("not signed in")
    sess, user = row
    if sess.revoked_at is not None or sess.expires_at <= utcnow() or not user.is_active:
        raise Unauthorized("session expired; sign in again")
    if unsafe_method and (csrf_token is None or not same_hash(csrf_token, sess.csrf_hash)):
        raise Forbidden("missing or wrong CSRF token (send it in the X-CSRF-Token header)")
    actor = actor_for_user(db, user, "user")
    if sess.active_tenant_id is not None and actor.sees(sess.active_tenant_id):
        return Actor(
            actor.kind,
            actor.user_id,
            sess.active_tenant_id,
            tenants.visible_tenant_ids(db, sess.active_tenant_id),
            actor.role,
            actor.label,
        )
    return actor


def end_session(db: Session, session_token: str) -> None:
    sess = db.scalar(select(UserSession).where(UserSession.token_hash == hash_token(session_token)))
    if sess is not None and sess.revoked_at is None:
        sess.revoked_at = utcnow()


def switch_tenant(db: Session, actor: Actor, session_token: str, tenant_id: int) -> None:
    """MSP tenant switcher: narrows the session's view to one visible tenant (and below)."""
    base = actor_for_user(db, db.get_one(User, actor.user_id), "user")
    if not base.sees(tenant_id):
        raise NotFound("tenant not found")
    sess = db.scalar(select(UserSession).where(UserSession.token_hash == hash_token(session_token)))
    if sess is None:
        raise Unauthorized("not signed in")
    sess.active_tenant_id = tenant_id


class FailureLimiter:
    """Counts failed authentications per key (client address, agent id) in a sliding window.

    In-process only: with several replicas each counts its own, which still bounds guessing.
    """

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:  # an unknown key (every good caller) adds no entry
                if key in self._failures and len(self._recent(key, now)) >= self.limit:
                    raise RateLimited("too many failed attempts; try again in a minute")

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)
            if len(self._failures) > 100_000:  # bounded memory under a spray of keys
                self._failures.clear()

    def _recent(self, key: str, now: float) -> deque[float]:
        entries = self._failures.setdefault(key, deque())
        while entries and now - entries[0] > self.window_s:
            entries.popleft()
        return entries
