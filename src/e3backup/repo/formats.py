"""Every magic number, version and binary layout of the repository format. NEVER CHANGE these:
existing repositories depend on them. A new layout gets a new version number beside the old one.

Blob      = b"E3" | version u8 | flags u8 | body
            body (encrypted)   = nonce[12] | AES-256-GCM(payload, ad = object id + header)
            body (unencrypted) = payload | keyed-BLAKE3(ad + header + payload)[:16]
            payload is zstd-compressed when flags & COMPRESSED.
Pack      = blob* | trailer blob | trailer_len u32 LE | b"E3PK"
Trailer   = count u32 | count * PACK_ENTRY
Index     = b"E3IX" | version u8 | count u32 | count * INDEX_ENTRY
Page      = n * chunk id (32 bytes); the all-zero id means "this chunk is all zeros"
"""

from __future__ import annotations

import struct

FORMAT_VERSION = 1

# Object layout ---------------------------------------------------------------------------------
CONFIG_KEY = "config"
KEYS_PREFIX = "keys/"
PACKS_PREFIX = "packs/"
INDEX_PREFIX = "index/"
SNAPSHOTS_PREFIX = "snapshots/"
SESSIONS_PREFIX = "sessions/"
TOMBSTONES_PREFIX = "tombstones/"
VERIFY_PREFIX = "verify/"  # verify/<snapshot id>: the last check verdict (repo/verification.py)


def pack_key(pack_id: bytes) -> str:
    hex_id = pack_id.hex()
    return f"{PACKS_PREFIX}{hex_id[:2]}/{hex_id}"


# Blob ------------------------------------------------------------------------------------------
BLOB_MAGIC = b"E3"
BLOB_VERSION = 1
BLOB_HEADER = struct.Struct("<2sBB")  # magic, version, flags
FLAG_COMPRESSED = 0x01
FLAG_ENCRYPTED = 0x02
NONCE_BYTES = 12
GCM_TAG_BYTES = 16
PLAIN_MAC_BYTES = 16

# Chunk ids -------------------------------------------------------------------------------------
ID_BYTES = 32
ZERO_ID = bytes(ID_BYTES)  # sentinel in pages: the chunk is all zeros and is not stored

# Blob types inside packs ------------------------------------------------------------------------
BLOB_DATA = 0  # disk chunk
BLOB_PAGE = 1  # page of a disk index

# Pack ------------------------------------------------------------------------------------------
PACK_MAGIC = b"E3PK"
PACK_FOOTER = struct.Struct("<I4s")  # trailer length, magic
PACK_ENTRY = struct.Struct("<B32sIII")  # type, chunk id, offset, stored length, raw length
TRAILER_COUNT = struct.Struct("<I")
TRAILER_AD = b"e3backup pack trailer"

# Index -----------------------------------------------------------------------------------------
INDEX_MAGIC = b"E3IX"
INDEX_VERSION = 1
INDEX_HEADER = struct.Struct("<4sBI")  # magic, version, count
INDEX_ENTRY = struct.Struct("<32sB32sIII")  # pack id, type, chunk id, offset, stored len, raw len

# Disk index pages ------------------------------------------------------------------------------
PAGE_ENTRIES = 1024  # chunk ids per page (32 KiB); pages dedupe across snapshots

# Chunk size limits -----------------------------------------------------------------------------
MIN_CHUNK_SIZE = 64 * 1024
MAX_CHUNK_SIZE = 4 * 1024 * 1024

# Key derivation defaults (scrypt: ~0.1 s and 32 MiB on a current core) --------------------------
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1

# Key files (repo/keys.py) -----------------------------------------------------------------------
# A key file is JSON: {"version", "kdf": {"name", ...params, "salt"}, "nonce", "wrapped"}. Version 1
# files name their KDF, so a new KDF is a new name, never a new meaning of an old one.
KEY_FILE_VERSION = 1
KDF_SCRYPT = "scrypt"  # the only KDF of the first key files: the SCRYPT_* defaults above
KDF_ARGON2ID = "argon2id"  # new key files: parameters calibrated on the creating machine
ARGON2_SALT_BYTES = 16
ARGON2_PARALLELISM = 1
ARGON2_BASE_MEMORY_KIB = 64 * 1024  # calibration probe, and the least a key file is given
ARGON2_MAX_MEMORY_KIB = 128 * 1024  # then passes grow: a backup stays under 300 MiB peak RSS
ARGON2_OPEN_MAX_MEMORY_KIB = 1024 * 1024  # larger values in a key file are refused as damage
ARGON2_OPEN_MAX_TIME_COST = 64
KDF_TARGET_SECONDS = 0.75  # calibration aims here: ~0.5-1 s per password guess
