"""Blob encoding: compress (when it helps), then encrypt or seal, bound to the object's id.

Every read verifies: a wrong byte anywhere raises IntegrityError, never returns data.
"""

from __future__ import annotations

import os
import threading

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from e3backup.core.errors import IntegrityError
from e3backup.repo import formats
from e3backup.repo.keys import MasterKeys

# zstd contexts are not thread-safe; each worker thread keeps its own.
_local = threading.local()
MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("cctx", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "dctx"):
        _local.dctx = zstandard.ZstdDecompressor()
    return _local.dctx  # type: ignore[no-any-return]


class BlobCodec:
    """Encodes and decodes blobs with one repository's keys. Thread-safe."""

    def __init__(self, keys: MasterKeys, compression_level: int = 3) -> None:
        self._keys = keys
        self._aead = AESGCM(keys.encryption_key) if keys.encryption_key else None
        self.compression_level = compression_level

    @property
    def encrypted(self) -> bool:
        return self._aead is not None

    def chunk_id(self, data: bytes | memoryview) -> bytes:
        """Keyed BLAKE3-256 of the plaintext: the same content gets different ids per repo."""
        return blake3.blake3(data, key=self._keys.id_key).digest()

    def encode(self, payload: bytes | memoryview, ad: bytes, compress: bool = True) -> bytes:
        flags = 0
        body: bytes | memoryview = payload
        if compress and self.compression_level > 0:
            packed = _compressor(self.compression_level).compress(payload)
            if len(packed) < len(payload) * 0.97:  # keep raw when zstd does not shrink it
                body, flags = packed, formats.FLAG_COMPRESSED
        if self._aead is not None:
            flags |= formats.FLAG_ENCRYPTED
            header = formats.BLOB_HEADER.pack(formats.BLOB_MAGIC, formats.BLOB_VERSION, flags)
            nonce = os.urandom(formats.NONCE_BYTES)
            return header + nonce + self._aead.encrypt(nonce, body, ad + header)
        header = formats.BLOB_HEADER.pack(formats.BLOB_MAGIC, formats.BLOB_VERSION, flags)
        return header + body + self._seal(ad, header, body)

    def decode(self, blob: bytes | memoryview, ad: bytes) -> bytes:
        """Verify and open a blob; raise IntegrityError on any damage."""
        blob = memoryview(blob)
        if len(blob) < formats.BLOB_HEADER.size:
            raise IntegrityError("blob truncated")
        header = bytes(blob[: formats.BLOB_HEADER.size])
        magic, version, flags = formats.BLOB_HEADER.unpack(header)
        if magic != formats.BLOB_MAGIC or version != formats.BLOB_VERSION:
            raise IntegrityError("blob header damaged (bad magic or version)")
        body = blob[formats.BLOB_HEADER.size :]
        if flags & formats.FLAG_ENCRYPTED:
            if self._aead is None:
                raise IntegrityError(
                    "blob header damaged (marked encrypted in an unencrypted repository)"
                )
            if len(body) < formats.NONCE_BYTES + formats.GCM_TAG_BYTES:
                raise IntegrityError("blob truncated")
            nonce = bytes(body[: formats.NONCE_BYTES])
            try:
                plain = self._aead.decrypt(nonce, body[formats.NONCE_BYTES :], ad + header)
            except InvalidTag:
                raise IntegrityError("blob failed authentication (corrupt or tampered)") from None
        else:
            if self._aead is not None:
                raise IntegrityError(
                    "blob header damaged (marked unencrypted in an encrypted repository)"
                )
            if len(body) < formats.PLAIN_MAC_BYTES:
                raise IntegrityError("blob truncated")
            plain_view, mac = body[: -formats.PLAIN_MAC_BYTES], body[-formats.PLAIN_MAC_BYTES :]
            if self._seal(ad, header, plain_view) != bytes(mac):
                raise IntegrityError("blob checksum mismatch (corrupt or tampered)")
            plain = bytes(plain_view)
        if flags & formats.FLAG_COMPRESSED:
            try:
                plain = _decompressor().decompress(plain, max_output_size=MAX_DECOMPRESSED_BYTES)
            except zstandard.ZstdError as exc:
                raise IntegrityError(f"blob does not decompress: {exc}") from None
        return plain

    def decode_chunk(self, blob: bytes | memoryview, chunk_id: bytes) -> bytes:
        """Decode a chunk blob and check the plaintext hashes to its id."""
        plain = self.decode(blob, chunk_id)
        if self.chunk_id(plain) != chunk_id:
            raise IntegrityError(f"chunk {chunk_id.hex()[:16]} content does not match its id")
        return plain

    def _seal(self, ad: bytes, header: bytes, body: bytes | memoryview) -> bytes:
        h = blake3.blake3(key=self._keys.id_key)
        h.update(ad)
        h.update(header)
        h.update(body)
        return h.digest(length=formats.PLAIN_MAC_BYTES)
