"""Secrets at rest: AES-256-GCM with the server key file (32 random bytes, mode 0600, created on
first start in the data dir).

A sealed value is `v1:` + base64(nonce ‖ ciphertext+tag). The column's name is the associated
data, so a ciphertext copied into another column (or another row kind) does not decrypt.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from e3backup.core.errors import E3Error, UsageError

KEY_BYTES = 32
NONCE_BYTES = 12
PREFIX = "v1:"


class SecretDecryptError(E3Error):
    """A stored secret does not decrypt with this server's key (wrong or replaced key file)."""


def load_or_create_key(path: Path) -> bytes:
    """Read the key file, creating it (0600, exclusive create) when it does not exist."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(KEY_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return load_or_create_key(path)
        with os.fdopen(fd, "wb") as out:
            out.write(key)
            out.flush()
            os.fsync(out.fileno())
        return key
    if len(key) != KEY_BYTES:
        raise UsageError(f"server key file {path} is damaged ({len(key)} bytes, want {KEY_BYTES})")
    return key


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("SecretBox key must be 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_key_file(cls, path: Path) -> SecretBox:
        return cls(load_or_create_key(path))

    def seal(self, plaintext: str, context: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, sealed: str, context: str) -> str:
        if not sealed.startswith(PREFIX):
            raise SecretDecryptError(f"stored secret for {context} has an unknown format")
        raw = base64.b64decode(sealed.removeprefix(PREFIX))
        try:
            return self._aead.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()
            ).decode()
        except InvalidTag:
            raise SecretDecryptError(
                f"stored secret for {context} does not decrypt with this server's key"
            ) from None

    def seal_optional(self, plaintext: str | None, context: str) -> str | None:
        return None if plaintext is None or plaintext == "" else self.seal(plaintext, context)

    def open_optional(self, sealed: str | None, context: str) -> str | None:
        return None if sealed is None else self.open(sealed, context)
