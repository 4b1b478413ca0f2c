"""BlobCodec: every stored object's envelope. A wrong byte is an error, never data."""

from __future__ import annotations

import os

import pytest

from e3backup.core.errors import IntegrityError
from e3backup.repo import formats
from e3backup.repo.blob import BlobCodec
from e3backup.repo.keys import MasterKeys

AD = b"packs/ab/some-object-id"
COMPRESSIBLE = b"all work and no play makes jack a dull boy\n" * 2000
INCOMPRESSIBLE = os.urandom(64 * 1024)


@pytest.fixture(params=[True, False], ids=["encrypted", "plain"])
def codec(request: pytest.FixtureRequest) -> BlobCodec:
    return BlobCodec(MasterKeys.generate(encrypted=request.param))


def _flags(blob: bytes) -> int:
    _magic, _version, flags = formats.BLOB_HEADER.unpack_from(blob)
    return int(flags)


@pytest.mark.parametrize("payload", [b"", b"x", COMPRESSIBLE, INCOMPRESSIBLE])
def test_round_trip(codec: BlobCodec, payload: bytes) -> None:
    blob = codec.encode(payload, AD)
    assert codec.decode(blob, AD) == payload
    assert codec.decode(memoryview(blob), AD) == payload
    assert bool(_flags(blob) & formats.FLAG_ENCRYPTED) == codec.encrypted


def test_compressed_flag_only_when_it_shrinks(codec: BlobCodec) -> None:
    packed = codec.encode(COMPRESSIBLE, AD)
    assert _flags(packed) & formats.FLAG_COMPRESSED
    assert len(packed) < len(COMPRESSIBLE) // 10

    raw = codec.encode(INCOMPRESSIBLE, AD)
    assert not _flags(raw) & formats.FLAG_COMPRESSED
    overhead = formats.BLOB_HEADER.size + (
        formats.NONCE_BYTES + formats.GCM_TAG_BYTES if codec.encrypted else formats.PLAIN_MAC_BYTES
    )
    assert len(raw) == len(INCOMPRESSIBLE) + overhead

    unasked = codec.encode(COMPRESSIBLE, AD, compress=False)
    assert not _flags(unasked) & formats.FLAG_COMPRESSED
    assert codec.decode(unasked, AD) == COMPRESSIBLE


def test_compression_level_zero_stores_raw() -> None:
    codec = BlobCodec(MasterKeys.generate(encrypted=True), compression_level=0)
    blob = codec.encode(COMPRESSIBLE, AD)
    assert not _flags(blob) & formats.FLAG_COMPRESSED
    assert codec.decode(blob, AD) == COMPRESSIBLE


def test_encrypted_blob_hides_plaintext() -> None:
    codec = BlobCodec(MasterKeys.generate(encrypted=True))
    secret = b"the secret plaintext" * 4
    blob = codec.encode(secret, AD, compress=False)
    assert secret[:20] not in blob
    # a random nonce: the same payload never encodes to the same bytes
    assert codec.encode(secret, AD) != codec.encode(secret, AD)


def test_wrong_associated_data_is_rejected(codec: BlobCodec) -> None:
    blob = codec.encode(COMPRESSIBLE, AD)
    with pytest.raises(IntegrityError):
        codec.decode(blob, AD + b"x")
    with pytest.raises(IntegrityError):
        codec.decode(blob, b"")


@pytest.mark.parametrize("payload", [b"small payload, 37 bytes of plaintext", b"z" * 300])
def test_flipping_any_byte_is_detected(codec: BlobCodec, payload: bytes) -> None:
    blob = codec.encode(payload, AD)
    for position in range(len(blob)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(blob)
            damaged[position] ^= mask
            with pytest.raises(IntegrityError):
                codec.decode(bytes(damaged), AD)


def test_truncated_or_extended_blob_is_detected(codec: BlobCodec) -> None:
    blob = codec.encode(b"payload that will be cut short", AD)
    for length in range(len(blob)):
        with pytest.raises(IntegrityError):
            codec.decode(blob[:length], AD)
    with pytest.raises(IntegrityError):
        codec.decode(blob + b"\0", AD)


def test_blob_from_another_mode_or_key_is_rejected() -> None:
    encrypted = BlobCodec(MasterKeys.generate(encrypted=True))
    plain = BlobCodec(MasterKeys.generate(encrypted=False))
    other = BlobCodec(MasterKeys.generate(encrypted=True))
    for reader, writer in [(plain, encrypted), (encrypted, plain), (other, encrypted)]:
        with pytest.raises(IntegrityError):
            reader.decode(writer.encode(b"data", AD), AD)


def test_chunk_id_is_keyed() -> None:
    data = b"the same content in two repositories" * 100
    first = BlobCodec(MasterKeys.generate(encrypted=True))
    second = BlobCodec(MasterKeys.generate(encrypted=True))
    unencrypted = BlobCodec(MasterKeys.generate(encrypted=False))
    ids = {first.chunk_id(data), second.chunk_id(data), unencrypted.chunk_id(data)}
    assert len(ids) == 3
    assert all(len(i) == formats.ID_BYTES for i in ids)
    assert first.chunk_id(data) == first.chunk_id(memoryview(data))
    assert first.chunk_id(data) != first.chunk_id(data + b"\0")


def test_decode_chunk_checks_content_against_id(codec: BlobCodec) -> None:
    data = b"chunk content" * 50
    chunk_id = codec.chunk_id(data)
    assert codec.decode_chunk(codec.encode(data, chunk_id), chunk_id) == data

    # A blob correctly sealed under the id but holding other content: the hash check catches it.
    forged = codec.encode(b"other content", chunk_id)
    with pytest.raises(IntegrityError, match="does not match its id"):
        codec.decode_chunk(forged, chunk_id)
    with pytest.raises(IntegrityError):
        codec.decode_chunk(codec.encode(data, chunk_id), codec.chunk_id(b"different"))
