"""Random identifiers for objects that are not content-addressed (snapshots, sessions, keys)."""

from __future__ import annotations

import secrets


def new_id() -> str:
    """A 64-hex-digit random id (256 bits): collisions are not a concern."""
    return secrets.token_hex(32)
