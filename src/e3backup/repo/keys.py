"""Repository keys: the master key material and its password-wrapped key files.

The master material is 64 random bytes: 32 for AES-256-GCM and 32 for keying BLAKE3 chunk ids
(so ids reveal nothing about content and differ between repositories). A key file wraps it with
a key derived from the password; several key files (passwords) may wrap the same master. New key
files use argon2id with a cost calibrated on the creating machine (~0.75 s of CPU, at most
128 MiB, then more passes) and record it; the first key files used scrypt N=2^15 and still open.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from argon2.exceptions import HashingError
from argon2.low_level import ARGON2_VERSION, Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from e3backup.core.errors import FormatError, WrongPassword
from e3backup.core.ids import new_id
from e3backup.repo import formats
from e3backup.storage.backend import Backend

log = logging.getLogger(__name__)

# Tests only: "1" makes new key files cheap (1 MiB, one pass) so the suite stays fast.
FAST_KDF_ENV = "E3BACKUP_KDF_TEST_FAST"
_FAST_MEMORY_KIB = 1024


@dataclass(frozen=True)
class MasterKeys:
    encryption_key: bytes | None  # None for unencrypted repositories
    id_key: bytes

    @classmethod
    def generate(cls, encrypted: bool) -> MasterKeys:
        return cls(os.urandom(32) if encrypted else None, os.urandom(32))


@dataclass(frozen=True)
class Argon2Params:
    time_cost: int  # passes over memory
    memory_kib: int
    parallelism: int = formats.ARGON2_PARALLELISM

    def derive(self, password: str, salt: bytes) -> bytes:
        return hash_secret_raw(
            password.encode("utf-8"),
            salt,
            time_cost=self.time_cost,
            memory_cost=self.memory_kib,
            parallelism=self.parallelism,
            hash_len=32,
            type=Type.ID,
            version=ARGON2_VERSION,
        )


_PROBE = Argon2Params(time_cost=1, memory_kib=formats.ARGON2_BASE_MEMORY_KIB)


def argon2_params_for(probe_s: float) -> Argon2Params:
    """Scale the probe (one pass over the base memory took `probe_s` of CPU) to the target cost.

    Memory grows first (it is what makes guessing on GPUs expensive), up to the cap; then passes.
    The cost never drops below the probe itself, so a slow host gets ~its probe time.
    """
    base, cap = formats.ARGON2_BASE_MEMORY_KIB, formats.ARGON2_MAX_MEMORY_KIB
    work = formats.KDF_TARGET_SECONDS / max(probe_s, 1e-4) * base  # KiB-passes to spend
    time_cost = min(max(1, -(-int(work) // cap)), formats.ARGON2_OPEN_MAX_TIME_COST)
    memory_kib = int(work / time_cost) // 1024 * 1024  # whole MiB
    return Argon2Params(time_cost, min(max(memory_kib, base), cap))


@functools.cache
def _calibrated() -> Argon2Params:
    probes = []
    for _ in range(2):  # the faster of two: the first also pays for faulting memory in
        start = time.thread_time()  # CPU time: a busy host must not make the key weaker
        _PROBE.derive("calibration", os.urandom(formats.ARGON2_SALT_BYTES))
        probes.append(time.thread_time() - start)
    params = argon2_params_for(min(probes))
    log.debug("argon2id calibrated: %s", params)
    return params


def default_kdf() -> Argon2Params:
    """Parameters for new key files: calibrated once per process (cheap ones under FAST_KDF_ENV)."""
    if os.environ.get(FAST_KDF_ENV) == "1":
        return Argon2Params(time_cost=1, memory_kib=_FAST_MEMORY_KIB)
    return _calibrated()


def wrap(
    keys: MasterKeys, password: str, repo_id: str, params: Argon2Params | None = None
) -> bytes:
    """Serialize `keys` into a key file for `password` (argon2id: `params`, else calibrated)."""
    assert keys.encryption_key is not None
    params = params or default_kdf()
    salt, nonce = os.urandom(formats.ARGON2_SALT_BYTES), os.urandom(12)
    wrapped = AESGCM(params.derive(password, salt)).encrypt(
        nonce, keys.encryption_key + keys.id_key, repo_id.encode()
    )
    doc = {
        "version": formats.KEY_FILE_VERSION,
        "kdf": {
            "name": formats.KDF_ARGON2ID,
            "version": ARGON2_VERSION,
            "time_cost": params.time_cost,
            "memory_kib": params.memory_kib,
            "parallelism": params.parallelism,
            "salt": _b64(salt),
        },
        "nonce": _b64(nonce),
        "wrapped": _b64(wrapped),
        "created_at": datetime.now(UTC).isoformat(),
    }
    return json.dumps(doc).encode()


def unwrap(data: bytes, password: str, repo_id: str) -> MasterKeys:
    """Open a key file; raise WrongPassword if the password does not open it."""
    try:
        doc: dict[str, Any] = json.loads(data)
        kek = _derive(doc["kdf"], password)
        nonce, wrapped = _unb64(doc["nonce"]), _unb64(doc["wrapped"])
    except (ValueError, KeyError, TypeError, HashingError) as exc:
        raise FormatError(f"damaged key file: {exc}") from exc
    try:
        material = AESGCM(kek).decrypt(nonce, wrapped, repo_id.encode())
    except InvalidTag:
        raise WrongPassword("wrong password: it does not open any key of this repository") from None
    except ValueError as exc:  # e.g. a nonce of impossible length
        raise FormatError(f"damaged key file: {exc}") from exc
    return MasterKeys(material[:32], material[32:64])


def _derive(kdf: dict[str, Any], password: str) -> bytes:
    salt = _unb64(kdf["salt"])
    if kdf["name"] == formats.KDF_SCRYPT:
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        return hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32
        )
    if kdf["name"] != formats.KDF_ARGON2ID:
        raise FormatError(f"unsupported key derivation {kdf['name']!r}")
    params = Argon2Params(int(kdf["time_cost"]), int(kdf["memory_kib"]), int(kdf["parallelism"]))
    # Bounds keep a tampered key file from pinning the host's memory or CPU.
    sane = (
        int(kdf["version"]) == ARGON2_VERSION
        and 1 <= params.time_cost <= formats.ARGON2_OPEN_MAX_TIME_COST
        and 8 * params.parallelism <= params.memory_kib <= formats.ARGON2_OPEN_MAX_MEMORY_KIB
        and 1 <= params.parallelism <= 16
        and len(salt) >= 8
    )
    if not sane:
        raise FormatError(f"damaged key file: argon2id parameters out of range: {params}")
    return params.derive(password, salt)


# --- key files in a repository ------------------------------------------------------------------


def unlock(backend: Backend, password: str, repo_id: str) -> tuple[str, MasterKeys]:
    """Find the key file `password` opens: (its object key, the master keys)."""
    key_objects = list(backend.list(formats.KEYS_PREFIX))
    if not key_objects:
        raise FormatError("the repository has no key files")
    damaged: list[str] = []
    for info in key_objects:
        try:
            return info.key, unwrap(backend.get(info.key), password, repo_id)
        except WrongPassword:
            continue
        except FormatError as exc:  # one damaged key file must not lock out the others
            damaged.append(f"{info.key}: {exc}")
    if damaged and len(damaged) == len(key_objects):
        raise FormatError("every key file is damaged: " + "; ".join(damaged))
    raise WrongPassword("wrong password for this repository")


def add_key_file(backend: Backend, keys: MasterKeys, password: str, repo_id: str) -> str:
    """Store a new key file for `password`; returns its object key."""
    key = formats.KEYS_PREFIX + new_id()
    backend.put(key, wrap(keys, password, repo_id))
    return key


def change_password(backend: Backend, repo_id: str, old_password: str, new_password: str) -> str:
    """Re-wrap the master keys under `new_password` (current KDF), then delete the old key file.

    The new file is written and read back before the old one goes, so a crash in between leaves
    two working passwords, never none. Other key files (other passwords) are left alone.
    """
    old_key, master = unlock(backend, old_password, repo_id)
    new_key = add_key_file(backend, master, new_password, repo_id)
    if unwrap(backend.get(new_key), new_password, repo_id) != master:
        raise FormatError(f"the new key file {new_key} does not read back; the old one is kept")
    backend.delete(old_key)
    return new_key


def kdf_summary(data: bytes) -> dict[str, Any]:
    """What a key file records about its key derivation (name and cost; not the salt)."""
    try:
        kdf: dict[str, Any] = dict(json.loads(data)["kdf"])
    except (ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"damaged key file: {exc}") from exc
    kdf.pop("salt", None)
    return kdf


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
