"""Verification records: what `check` last concluded about each snapshot, kept in the repository.

`check` writes `verify/<snapshot id>` (an encrypted blob, like every object but `config`) for every
snapshot it examined: `ok` or `damaged`, when, at which scope (`structure`, `read-data`,
`read-data 2/5`, `read-data 10%`) and the first problems found. The backup engine reads the record
of a would-be parent and never builds on a damaged snapshot: it falls back to an older, undamaged
one of the same source, or to a full read.

A damaged verdict is sticky: only a full `check --read-data` that finds the snapshot intact (after
a repair, say) clears it. A structure-only or subset check may have skipped the damaged packs, so
its "ok" must not whitewash an earlier finding.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from e3backup.core.errors import E3Error, ObjectNotFound
from e3backup.repo import formats
from e3backup.repo.repository import Repository

log = logging.getLogger(__name__)

STATUS_OK = "ok"
STATUS_DAMAGED = "damaged"
SCOPE_FULL_DATA = "read-data"
MAX_PROBLEMS_KEPT = 20


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
