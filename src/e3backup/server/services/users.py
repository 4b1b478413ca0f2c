"""Users: argon2id password hashes (argon2-cffi defaults are argon2id), roles, sign-in checks."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from e3backup.server.db.base import utcnow
from e3backup.server.db.models import User
from e3backup.server.db.models.tenancy import ROLES
from e3backup.server.services.errors import Conflict, Invalid, Unauthorized

_hasher = PasswordHasher()
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024
# Verified against when the e-mail is unknown, so both cases take the same time.
_DUMMY_HASH = _hasher.hash("e3backup-no-such-user")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if "@" not in email or len(email) > 320 or email.startswith("@") or email.endswith("@"):
        raise Invalid("email must look like name@example.com", "email")
    return email


def create_user(db: Session, tenant_id: int, email: str, password: str, role: str) -> User:
    email = normalise_email(email)
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}", "role")
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise Invalid(f"password must have at least {MIN_PASSWORD_CHARS} characters", "password")
    if db.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict(f"a user with email {email} already exists")
    user = User(tenant_id=tenant_id, email=email, password_hash=hash_password(password), role=role)
    db.add(user)
    db.flush()
    return user


def user_by_email(db: Session, email: str) -> User | None:
    return db.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))


def authenticate(db: Session, email: str, password: str) -> User:
    """The active user with this e-mail and password, else Unauthorized (same message)."""
    user = user_by_email(db, email)
    if user is None or len(password) > MAX_PASSWORD_CHARS:
        verify_password(_DUMMY_HASH, password[:MAX_PASSWORD_CHARS])
        raise Unauthorized("wrong email or password")
    if not verify_password(user.password_hash, password) or not user.is_active:
        raise Unauthorized("wrong email or password")
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = utcnow()
    return user
