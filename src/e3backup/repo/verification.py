"""Verification records: what `check` last concluded about each snapshot, kept in the repository.

`check` writes `verify/<snapshot id>` (an encrypted blob, like every object but `config`) for every
snapshot it examined: `ok` or `damaged`, when, at which scope (`structure`, `read-data`,
`read-data 2/5`, `read-data 10%`) and the first problems found. The backup engine reads the record
of a would-be parent and never builds on a damaged snapshot: it falls back to an older, undamaged
one of the same source, or to a full read.

A damaged verdict is sticky: only a full `check --read-data` that finds the snapshot intact (after
a repair, say) clears it. A structure-only or subset check may have skipped the damaged packs, so
its "ok" must not whitewash an earlier finding.

Damaged blobs are never reused by dedup
---------------------------------------
`check` with `record=True` also stores the (chunk id, pack id) pairs of every blob it found
damaged (a bad blob, or a missing or truncated pack) in `verify/damaged-<hash>`. When a
`Repository` loads the chunk index it drops the index entries of exactly those pairs, so a later
backup sees such a chunk as absent and stores a fresh copy in a new pack; the new index entry is
the one readers then use. Only the pair is dropped: an intact copy of the same chunk in another
pack stays usable. A pair leaves the record when a check reads its pack and finds the blob
intact (a full `--read-data`, or a subset that reads that pack), when its pack is no longer in
the index, or when prune deletes the pack. Each recording check replaces the previous record
objects with one holding the current set (two checks racing: the later write wins, and the next
read-data check finds whatever the other one lost).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import blake3

from e3backup.core.errors import E3Error, ObjectNotFound
from e3backup.repo import damaged_blobs, formats
from e3backup.repo.damaged_blobs import Blob, read_damaged
from e3backup.repo.repository import Repository

log = logging.getLogger(__name__)

STATUS_OK = "ok"
STATUS_DAMAGED = "damaged"
SCOPE_FULL_DATA = "read-data"
MAX_PROBLEMS_KEPT = 20
DAMAGED_PREFIX = damaged_blobs.DAMAGED_PREFIX  # the records are read in repo/damaged_blobs.py


@dataclass(frozen=True)
class VerificationRecord:
    snapshot_id: str
    status: str  # STATUS_OK | STATUS_DAMAGED
    checked_at: str  # ISO 8601, UTC
    scope: str  # "structure" | "read-data" | "read-data <subset>"
    problems: list[str] = field(default_factory=list)

    @property
    def damaged(self) -> bool:
        return self.status == STATUS_DAMAGED

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> VerificationRecord:
        doc = json.loads(data)
        return cls(
            snapshot_id=str(doc["snapshot_id"]),
            status=str(doc["status"]),
            checked_at=str(doc["checked_at"]),
            scope=str(doc["scope"]),
            problems=[str(p) for p in doc.get("problems", [])],
        )


def record_key(snapshot_id: str) -> str:
    return formats.VERIFY_PREFIX + snapshot_id


def load_record(repo: Repository, snapshot_id: str) -> VerificationRecord | None:
    """The snapshot's record, or None if it was never checked. An unreadable record counts as
    damaged: a backup must not build on a snapshot whose verdict cannot be read."""
    key = record_key(snapshot_id)
    try:
        data = repo.codec.decode(repo.backend.get(key), key.encode())
        record = VerificationRecord.from_json(data)
    except ObjectNotFound:
        return None
    except (E3Error, ValueError, KeyError) as exc:
        log.warning("verification record of snapshot %s is unreadable: %s", snapshot_id, exc)
        return VerificationRecord(snapshot_id, STATUS_DAMAGED, "", "unknown", [str(exc)])
    if record.snapshot_id != snapshot_id:
        return VerificationRecord(
            snapshot_id, STATUS_DAMAGED, "", "unknown", [f"{key} names another snapshot"]
        )
    return record


def is_damaged(repo: Repository, snapshot_id: str) -> bool:
    record = load_record(repo, snapshot_id)
    return record is not None and record.damaged


def record_results(
    repo: Repository,
    checked: list[str],
    damaged: dict[str, list[str]],
    scope: str,
) -> list[VerificationRecord]:
    """Write the verdicts of one check run; returns the records written."""
    now = datetime.now(UTC).isoformat()
    written = []
    for snapshot_id in checked:
        problems = damaged.get(snapshot_id)
        if problems is not None:
            record = VerificationRecord(
                snapshot_id, STATUS_DAMAGED, now, scope, problems[:MAX_PROBLEMS_KEPT]
            )
        else:
            if scope != SCOPE_FULL_DATA and is_damaged(repo, snapshot_id):
                continue  # a partial check cannot clear an earlier finding
            record = VerificationRecord(snapshot_id, STATUS_OK, now, scope)
        key = record_key(snapshot_id)
        repo.backend.put(key, repo.codec.encode(record.to_json(), key.encode()))
        written.append(record)
    return written


def forget_record(repo: Repository, snapshot_id: str) -> None:
    """Drop the record of a snapshot that no longer exists (for forget/prune)."""
    repo.backend.delete(record_key(snapshot_id))


# --- damaged blobs (kept out of dedup) ---------------------------------------------------------


def _read_damaged(repo: Repository) -> tuple[list[str], set[Blob]]:
    return read_damaged(repo.backend, repo.codec)


def load_damaged_blobs(repo: Repository) -> set[Blob]:
    """The (chunk id, pack id) pairs a check found damaged and no later check found intact."""
    return repo.damaged_blobs()


def _write_damaged(repo: Repository, old_keys: list[str], blobs: set[Blob]) -> None:
    keep = ""
    if blobs:
        payload = json.dumps(
            {"blobs": sorted([c.hex(), p.hex()] for c, p in blobs)}, sort_keys=True
        ).encode()
        keep = DAMAGED_PREFIX + blake3.blake3(payload).hexdigest()
        if keep not in old_keys:
            repo.backend.put(keep, repo.codec.encode(payload, keep.encode()))
    for key in old_keys:
        if key != keep:
            repo.backend.delete(key)


def record_damaged_blobs(
    repo: Repository, found: set[Blob], read_packs: set[bytes], indexed_packs: set[bytes]
) -> None:
    """Store what one check run found: earlier pairs survive unless the run read their pack (and
    so judged it afresh) or the pack left the index."""
    old_keys, old = _read_damaged(repo)
    kept = {(c, p) for c, p in old if p in indexed_packs and p not in read_packs}
    current = kept | found
    if current == old and len(old_keys) <= 1:
        return
    _write_damaged(repo, old_keys, current)


def forget_damaged_packs(repo: Repository, pack_ids: Iterable[bytes]) -> None:
    """Drop the pairs of packs that were deleted (for prune)."""
    gone = set(pack_ids)
    if not gone:
        return
    old_keys, old = _read_damaged(repo)
    current = {(c, p) for c, p in old if p not in gone}
    if current != old:
        _write_damaged(repo, old_keys, current)
