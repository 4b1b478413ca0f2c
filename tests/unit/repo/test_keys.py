"""Key files: the master keys wrapped by a password-derived key."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest

from e3backup.core.errors import FormatError, WrongPassword
from e3backup.repo.keys import MasterKeys, unwrap, wrap

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
    "n not a number": lambda k: _edit(k, kdf_n="many"),
    "n not a power of two": lambda k: _edit(k, kdf_n=1000),
    "short nonce": lambda k: _edit(k, nonce=base64.b64encode(b"1234").decode()),
    "other kdf": lambda k: _edit(k, kdf_name="pbkdf2"),
}


@pytest.mark.parametrize("damage", list(_DAMAGE))
def test_damaged_key_file(key_file: bytes, damage: str) -> None:
    with pytest.raises(FormatError):
        unwrap(_DAMAGE[damage](key_file), "correct horse", REPO_ID)
