"""Reading the damaged-blob records (`verify/damaged-<hash>`) that keep damaged blobs out of dedup.

Below both `repository` (which drops these pairs when it loads the chunk index) and
`verification` (which writes the records after a check); see repo/verification.py for the rules.
"""

from __future__ import annotations

import json
import logging

from e3backup.core.errors import E3Error, ObjectNotFound
from e3backup.repo import formats
from e3backup.repo.blob import BlobCodec
from e3backup.storage.backend import Backend

log = logging.getLogger(__name__)

DAMAGED_PREFIX = formats.VERIFY_PREFIX + "damaged-"  # + blake3 of the content

Blob = tuple[bytes, bytes]  # (chunk id, pack id)


def read_damaged(backend: Backend, codec: BlobCodec) -> tuple[list[str], set[Blob]]:
    """The record objects (unreadable ones included, so a rewrite replaces them) and the pairs."""
    keys: list[str] = []
    blobs: set[Blob] = set()
    for info in backend.list(DAMAGED_PREFIX):
        try:
            data = codec.decode(backend.get(info.key), info.key.encode())
            doc = json.loads(data)
            found = {(bytes.fromhex(c), bytes.fromhex(p)) for c, p in doc["blobs"]}
        except ObjectNotFound:  # replaced by a concurrent check
            continue
        except (E3Error, ValueError, KeyError, TypeError) as exc:
            log.warning("damaged-blob record %s is unreadable: %s", info.key, exc)
            keys.append(info.key)
            continue
        keys.append(info.key)
        blobs |= found
    return keys, blobs
