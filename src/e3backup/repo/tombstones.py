"""Tombstones and session records: the small JSON objects that garbage collection reasons about.

- `tombstones/<snapshot id>` (kind "snapshot"): written by `forget` *before* it deletes
  `snapshots/<id>`; holds the manifest and the time, so for a grace period the forgotten
  snapshot still protects its data (a backup that chose it as parent, a restore that is reading
  it) and a crashed forget can be finished. `repo repair snapshots --forget` writes one dated
  at the epoch ("protects": false): a damaged snapshot's data must not stop prune.
- `tombstones/packs-<id>` (kind "packs"): written by prune when it removes packs from the index;
  the packs themselves are deleted by a later prune, at least one grace period afterwards.
- `sessions/<id>`: written by write sessions (start, heartbeat); read here.
All are encoded like every other object (the key is the associated data).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from e3backup.core.errors import E3Error, FormatError, ObjectNotFound
from e3backup.core.ids import new_id
from e3backup.repo import formats
from e3backup.repo.manifest import Snapshot
from e3backup.repo.repository import Repository, hostname

PACKS_TOMBSTONE = "packs-"


@dataclass(frozen=True)
class SnapshotTombstone:
    key: str
    time_unix: float
    snapshot: Snapshot


@dataclass(frozen=True)
class PacksTombstone:
    key: str
    time_unix: float
    pack_ids: list[bytes]


@dataclass(frozen=True)
class SessionRecord:
    key: str
    started_unix: float
    heartbeat_unix: float
    hostname: str


def _put_json(repo: Repository, key: str, doc: dict[str, object]) -> None:
    repo.backend.put(key, repo.codec.encode(json.dumps(doc).encode(), key.encode()))


def _get_json(repo: Repository, key: str) -> dict[str, object]:
    try:
        doc = json.loads(repo.codec.decode(repo.backend.get(key), key.encode()))
    except ValueError as exc:
        raise FormatError(f"{key} is malformed: {exc}") from exc
    if not isinstance(doc, dict):
        raise FormatError(f"{key} is malformed")
    return doc


def forget_snapshot(
    repo: Repository, snapshot: Snapshot, clock: Callable[[], float], protect: bool = True
) -> None:
    """Tombstone first, then delete: a crash in between leaves a tombstone prune finishes.

    With `protect=False` (`repo repair snapshots --forget`: the snapshot's data is gone) the
    tombstone's time is the epoch, so it is no prune root and the next prune can run; the
    real time is kept as `forgotten_unix`."""
    key = formats.TOMBSTONES_PREFIX + snapshot.id
    now = clock()
    doc = {
        "kind": "snapshot",
        "time_unix": now if protect else 0.0,
        "forgotten_unix": now,
        "protects": protect,
        "hostname": hostname(),
        "snapshot": snapshot.to_json().decode(),
    }
    _put_json(repo, key, doc)
    repo.backend.delete(formats.SNAPSHOTS_PREFIX + snapshot.id)


def write_packs_tombstone(repo: Repository, pack_ids: list[bytes], time_unix: float) -> str:
    key = f"{formats.TOMBSTONES_PREFIX}{PACKS_TOMBSTONE}{new_id()}"
    _put_json(
        repo, key, {"kind": "packs", "time_unix": time_unix, "packs": [p.hex() for p in pack_ids]}
    )
    return key


def read_tombstones(repo: Repository) -> tuple[list[SnapshotTombstone], list[PacksTombstone]]:
    snapshots: list[SnapshotTombstone] = []
    packs: list[PacksTombstone] = []
    for info in repo.backend.list(formats.TOMBSTONES_PREFIX):
        try:
            doc = _get_json(repo, info.key)
        except ObjectNotFound:
            # A concurrent prune removed it after listing: a packs tombstone goes only once its
            # packs are deleted, a snapshot tombstone only once older than G. Neither protects.
            continue
        try:
            stamp = float(doc["time_unix"])  # type: ignore[arg-type]
            if doc.get("kind") == "packs":
                hexes = doc["packs"]
                assert isinstance(hexes, list)
                packs.append(PacksTombstone(info.key, stamp, [bytes.fromhex(h) for h in hexes]))
            else:
                manifest = Snapshot.from_json(str(doc["snapshot"]).encode())
                snapshots.append(SnapshotTombstone(info.key, stamp, manifest))
        except (KeyError, TypeError, ValueError, AssertionError) as exc:
            raise FormatError(f"tombstone {info.key} is malformed: {exc}") from exc
    return snapshots, packs


def read_sessions(repo: Repository) -> list[SessionRecord]:
    """Registered write sessions; one that vanishes while listed (it committed) is skipped."""
    records = []
    for info in repo.backend.list(formats.SESSIONS_PREFIX):
        try:
            doc = _get_json(repo, info.key)
        except E3Error:
            # Gone (committed) or unreadable: treat an unreadable one as just started, so it
            # protects everything rather than nothing.
            if _exists(repo, info.key):
                now = time.time()
                records.append(SessionRecord(info.key, float("-inf"), now, "?"))
            continue
        started = doc.get("started_unix")
        if started is None:
            started = datetime.fromisoformat(str(doc["started_at"])).timestamp()
        records.append(
            SessionRecord(
                info.key,
                float(started),  # type: ignore[arg-type]
                float(doc["heartbeat_unix"]),  # type: ignore[arg-type]
                str(doc.get("hostname", "?")),
            )
        )
    return records


def _exists(repo: Repository, key: str) -> bool:
    try:
        repo.backend.stat(key)
    except E3Error:
        return False
    return True
