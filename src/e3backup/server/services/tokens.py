"""Random bearer secrets and their stored form (SHA-256 hex): the secret is shown once."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_token(prefix: str) -> tuple[str, str]:
    """(secret, stored hash); the prefix tells a reader what kind of token they hold."""
    secret = f"{prefix}_{secrets.token_urlsafe(32)}"
    return secret, hash_token(secret)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same_hash(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_token(secret), stored_hash)
