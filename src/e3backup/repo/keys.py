"""Repository keys: the master key material and its password-wrapped key files.

The master material is 64 random bytes: 32 for AES-256-GCM and 32 for keying BLAKE3 chunk ids
(so ids reveal nothing about content and differ between repositories). A key file wraps it with
a key derived from the password by scrypt; several key files (passwords) may wrap the same master.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from e3backup.core.errors import FormatError, WrongPassword
from e3backup.repo import formats


@dataclass(frozen=True)
class MasterKeys:
    encryption_key: bytes | None  # None for unencrypted repositories
    id_key: bytes

    @classmethod
    def generate(cls, encrypted: bool) -> MasterKeys:
        return cls(os.urandom(32) if encrypted else None, os.urandom(32))


def _kek(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32
    )


def wrap(keys: MasterKeys, password: str, repo_id: str) -> bytes:
    """Serialize `keys` into a key file protected by `password`."""
    assert keys.encryption_key is not None
    salt, nonce = os.urandom(16), os.urandom(12)
    n, r, p = formats.SCRYPT_N, formats.SCRYPT_R, formats.SCRYPT_P
    wrapped = AESGCM(_kek(password, salt, n, r, p)).encrypt(
        nonce, keys.encryption_key + keys.id_key, repo_id.encode()
    )
    doc = {
        "version": 1,
        "kdf": {"name": "scrypt", "n": n, "r": r, "p": p, "salt": _b64(salt)},
        "nonce": _b64(nonce),
        "wrapped": _b64(wrapped),
        "created_at": datetime.now(UTC).isoformat(),
    }
    return json.dumps(doc).encode()


def unwrap(data: bytes, password: str, repo_id: str) -> MasterKeys:
    """Open a key file; raise WrongPassword if the password does not open it."""
    try:
        doc: dict[str, Any] = json.loads(data)
        kdf = doc["kdf"]
        if kdf["name"] != "scrypt":
            raise FormatError(f"unsupported key derivation {kdf['name']!r}")
        kek = _kek(password, _unb64(kdf["salt"]), int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
        nonce, wrapped = _unb64(doc["nonce"]), _unb64(doc["wrapped"])
    except (ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"damaged key file: {exc}") from exc
    try:
        material = AESGCM(kek).decrypt(nonce, wrapped, repo_id.encode())
    except InvalidTag:
        raise WrongPassword("wrong password: it does not open any key of this repository") from None
    except ValueError as exc:  # e.g. a nonce of impossible length
        raise FormatError(f"damaged key file: {exc}") from exc
    return MasterKeys(material[:32], material[32:64])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
