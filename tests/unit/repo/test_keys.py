"""Key files: the master keys wrapped by a password-derived key (argon2id; old ones scrypt)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest

from e3backup.core.errors import FormatError, WrongPassword
from e3backup.repo import formats, keys
from e3backup.repo.keys import Argon2Params, MasterKeys, argon2_params_for, unwrap, wrap
from fixtures.legacy_keys import (
    LEGACY_MASTER,
    LEGACY_PASSWORD,
    LEGACY_REPO_ID,
    LEGACY_SCRYPT_KEY_FILE,
)

REPO_ID = "a" * 64


@pytest.fixture(scope="module")
def master() -> MasterKeys:
    return MasterKeys.generate(encrypted=True)


@pytest.fixture(scope="module")
def key_file(master: MasterKeys) -> bytes:
    return wrap(master, "correct horse", REPO_ID)


def _edit(key_file: bytes, **changes: object) -> bytes:
    doc = json.loads(key_file)
    for name, value in changes.items():
        if name.startswith("kdf_"):
            doc["kdf"][name[4:]] = value
        elif value is None:
            del doc[name]
        else:
            doc[name] = value
    return json.dumps(doc).encode()


def test_generate() -> None:
    encrypted = MasterKeys.generate(encrypted=True)
    assert encrypted.encryption_key is not None and len(encrypted.encryption_key) == 32
    assert len(encrypted.id_key) == 32
    plain = MasterKeys.generate(encrypted=False)
    assert plain.encryption_key is None and len(plain.id_key) == 32
    assert MasterKeys.generate(True) != MasterKeys.generate(True)


def test_wrap_unwrap_round_trip(master: MasterKeys, key_file: bytes) -> None:
    assert unwrap(key_file, "correct horse", REPO_ID) == master


def test_key_file_does_not_contain_the_keys_or_password(
    master: MasterKeys, key_file: bytes
) -> None:
    assert master.encryption_key is not None
    for secret in (master.encryption_key, master.id_key):
        assert secret not in key_file
        assert base64.b64encode(secret) not in key_file
        assert secret.hex().encode() not in key_file
    assert b"correct horse" not in key_file


def test_same_master_wrapped_twice_differs(master: MasterKeys, key_file: bytes) -> None:
    again = wrap(master, "correct horse", REPO_ID)
    assert again != key_file  # fresh salt and nonce
    assert unwrap(again, "correct horse", REPO_ID) == master


@pytest.mark.parametrize("password", ["wrong", "", "correct horse ", "Correct horse"])
def test_wrong_password(key_file: bytes, password: str) -> None:
    with pytest.raises(WrongPassword):
        unwrap(key_file, password, REPO_ID)


def test_key_file_of_another_repository(key_file: bytes) -> None:
    with pytest.raises(WrongPassword):
        unwrap(key_file, "correct horse", "b" * 64)


def test_unicode_password(master: MasterKeys) -> None:
    data = wrap(master, "pässwörd ✓", REPO_ID)
    assert unwrap(data, "pässwörd ✓", REPO_ID) == master
    with pytest.raises(WrongPassword):
        unwrap(data, "passwort ✓", REPO_ID)


def test_tampered_ciphertext_does_not_open(key_file: bytes) -> None:
    wrapped = bytearray(base64.b64decode(json.loads(key_file)["wrapped"]))
    wrapped[0] ^= 1
    with pytest.raises(WrongPassword):  # AEAD cannot tell tampering from a wrong password
        unwrap(
            _edit(key_file, wrapped=base64.b64encode(wrapped).decode()), "correct horse", REPO_ID
        )


_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda k: b"",
    "truncated": lambda k: k[: len(k) // 2],
    "not utf-8": lambda k: b"\xff\xfe" + k,
    "a list": lambda k: b"[]",
    "a string": lambda k: b'"key"',
    "no kdf": lambda k: _edit(k, kdf=None),
    "no nonce": lambda k: _edit(k, nonce=None),
    "no wrapped": lambda k: _edit(k, wrapped=None),
    "bad base64 nonce": lambda k: _edit(k, nonce="!!not base64!!"),
    "bad base64 salt": lambda k: _edit(k, kdf_salt="***"),
    "time cost not a number": lambda k: _edit(k, kdf_time_cost="many"),
    "time cost zero": lambda k: _edit(k, kdf_time_cost=0),
    "time cost huge": lambda k: _edit(k, kdf_time_cost=10**6),
    "memory below the minimum": lambda k: _edit(k, kdf_memory_kib=4),
    "memory of 1 TiB": lambda k: _edit(k, kdf_memory_kib=2**30),  # refused, not allocated
    "no parallelism": lambda k: _edit(k, kdf_parallelism=None),
    "other argon2 version": lambda k: _edit(k, kdf_version=16),
    "short nonce": lambda k: _edit(k, nonce=base64.b64encode(b"1234").decode()),
    "other kdf": lambda k: _edit(k, kdf_name="pbkdf2"),
}
_SCRYPT_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "n not a number": lambda k: _edit(k, kdf_n="many"),
    "n not a power of two": lambda k: _edit(k, kdf_n=1000),
    "no salt": lambda k: _edit(k, kdf_salt=None),
}


@pytest.mark.parametrize("damage", list(_DAMAGE))
def test_damaged_key_file(key_file: bytes, damage: str) -> None:
    with pytest.raises(FormatError):
        unwrap(_DAMAGE[damage](key_file), "correct horse", REPO_ID)


@pytest.mark.parametrize("damage", list(_SCRYPT_DAMAGE))
def test_damaged_scrypt_key_file(damage: str) -> None:
    with pytest.raises(FormatError):
        unwrap(_SCRYPT_DAMAGE[damage](LEGACY_SCRYPT_KEY_FILE), LEGACY_PASSWORD, LEGACY_REPO_ID)


def test_scrypt_key_file_of_the_first_format_still_opens() -> None:
    assert unwrap(LEGACY_SCRYPT_KEY_FILE, LEGACY_PASSWORD, LEGACY_REPO_ID) == LEGACY_MASTER
    with pytest.raises(WrongPassword):
        unwrap(LEGACY_SCRYPT_KEY_FILE, "new password", LEGACY_REPO_ID)


def test_key_file_records_the_argon2id_parameters(master: MasterKeys) -> None:
    params = Argon2Params(time_cost=2, memory_kib=2048)
    doc = json.loads(wrap(master, "pw", REPO_ID, params))
    kdf = doc["kdf"]
    assert (kdf["name"], kdf["version"]) == ("argon2id", 0x13)
    assert (kdf["time_cost"], kdf["memory_kib"], kdf["parallelism"]) == (2, 2048, 1)
    assert len(base64.b64decode(kdf["salt"])) == formats.ARGON2_SALT_BYTES
    assert doc["version"] == formats.KEY_FILE_VERSION
    # The recorded parameters are the ones used: other ones derive another key.
    with pytest.raises(WrongPassword):
        unwrap(_edit(json.dumps(doc).encode(), kdf_time_cost=1), "pw", REPO_ID)
    assert unwrap(json.dumps(doc).encode(), "pw", REPO_ID) == master


@pytest.mark.parametrize("probe_s", [0.004, 0.01, 0.03, 0.067, 0.15, 0.3, 0.5, 0.74])
def test_calibration_scales_the_probe_to_the_target(probe_s: float) -> None:
    params = argon2_params_for(probe_s)
    base = formats.ARGON2_BASE_MEMORY_KIB
    assert base <= params.memory_kib <= formats.ARGON2_MAX_MEMORY_KIB
    assert params.memory_kib % 1024 == 0 and params.time_cost >= 1
    predicted_s = probe_s * params.time_cost * params.memory_kib / base
    assert 0.5 <= predicted_s <= 1.0, (params, predicted_s)


@pytest.mark.parametrize("probe_s", [0.75, 1.5, 10.0])
def test_calibration_on_a_slow_host_keeps_the_floor(probe_s: float) -> None:
    assert argon2_params_for(probe_s) == Argon2Params(1, formats.ARGON2_BASE_MEMORY_KIB)


def test_default_calibration_lands_in_range(
    master: MasterKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one test that pays for real parameters: what `repo init` gets on this machine.

    Their cost in seconds is measured by bench/kdf_bench.py, not asserted here.
    """
    monkeypatch.delenv(keys.FAST_KDF_ENV, raising=False)
    keys._calibrated.cache_clear()
    try:
        params = keys.default_kdf()
        data = wrap(master, "pw", REPO_ID)
    finally:
        keys._calibrated.cache_clear()
    kdf = json.loads(data)["kdf"]
    assert (kdf["time_cost"], kdf["memory_kib"]) == (params.time_cost, params.memory_kib)
    assert formats.ARGON2_BASE_MEMORY_KIB <= params.memory_kib <= formats.ARGON2_MAX_MEMORY_KIB
    assert unwrap(data, "pw", REPO_ID) == master


def test_test_suite_uses_cheap_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(keys.FAST_KDF_ENV, "1")
    assert keys.default_kdf().memory_kib < formats.ARGON2_BASE_MEMORY_KIB
