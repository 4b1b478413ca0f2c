"""Where the RCT ids of a committed backup live, and how the next backup finds them.

RCT ids exist only once the recovery snapshot is converted to a reference point, which happens
after the backup is durable (the repository snapshot and its per-disk tokens are already
written). So the two halves are kept apart, joined by the recovery snapshot's InstanceID:

- the *token* in the repository snapshot (`rct.Token`: recovery snapshot id, disk identifier,
  size) is the stable key. The VM engine hands the parent snapshot's tokens back to `prepare`,
  so whatever RCT ids are used belong to exactly the backup that becomes the parent (parent
  verification in engines/vm_plan.py is untouched).
- the *record* (`encode_record`: recovery snapshot id → reference point + RCT id of one disk)
  is what commit learns. It is written to this host's `hyperv-rct.json` (`RctState`) and also
  goes to the server as the run's `rct_ids` per disk (the VM engine's `committed_token`); the
  server stores them with the backup point and sends them back in the next run's `vms[]`.

The next run looks a token's snapshot id up on this host first, then in the server's records
(`ServerRecords`): a reinstalled agent or a VM moved to another host continues incrementally.
A record whose snapshot id is not the parent token's is never used (it belongs to another
backup); the chain checks (reference point listed on this VM, RCT id in it, disk identity and
size unchanged: `rct.chain_check`) apply to both sources alike, so a wrong or foreign record
from the server only costs a full read, with the reason.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e3backup.sources.hypervisors.base import HypervisorError

RECORD_VERSION = 1
STATE_FILE = "hyperv-rct.json"
KEEP_CHECKPOINTS = 4  # per VM: the newest records (older backups are never parents)
HOST = "this host"
SERVER = "the server"


@dataclass(frozen=True)
class Committed:
    """What a conversion gave: the reference point and the RCT id of each disk."""

    reference_point: str
    rct_ids: dict[str, str]  # disk name → RCT id
    origin: str = HOST  # where the record was found (named in full-read reasons)

    def to_dict(self) -> dict[str, Any]:
        return {"reference_point": self.reference_point, "rct_ids": dict(self.rct_ids)}


def encode_record(checkpoint: str, reference_point: str, rct_id: str) -> str:
    doc = {"v": RECORD_VERSION, "checkpoint": checkpoint, "reference_point": reference_point}
    return json.dumps(doc | {"rct_id": rct_id}, separators=(",", ":"), sort_keys=True)


def decode_record(text: str) -> tuple[str, str, str] | None:
    """(checkpoint, reference point, RCT id), or None for anything else (a snapshot token, a
    QEMU bitmap name, garbage)."""
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("v") != RECORD_VERSION:
            return None
        found = (doc["checkpoint"], doc["reference_point"], doc["rct_id"])
    except (ValueError, TypeError, KeyError):
        return None
    if not all(isinstance(v, str) and v for v in found):
        return None
    return found


class ServerRecords:
    """The records the server sent with this run (`vms[].rct_ids`, disk name → record)."""

    def __init__(self, per_vm: Iterable[Mapping[str, str]] = ()) -> None:
        self._by_key: dict[tuple[str, str], tuple[str, str]] = {}
        for rct_ids in per_vm:
            for disk, text in rct_ids.items():
                found = decode_record(str(text))
                if found is not None:
                    checkpoint, point, rct_id = found
                    self._by_key[(checkpoint, disk)] = (point, rct_id)

    def __len__(self) -> int:
        return len(self._by_key)

    def committed(self, checkpoint: str, disk: str) -> Committed | None:
        found = self._by_key.get((checkpoint, disk))
        if found is None:
            return None
        return Committed(found[0], {disk: found[1]}, SERVER)


class RctState:
    """`<state dir>/hyperv-rct.json`: per VM, checkpoint → Committed, and the recovery
    snapshots this host created and has not yet converted or removed (a crashed run's
    leftovers, removed by the next run)."""

    _lock = threading.Lock()

    def __init__(self, directory: Path) -> None:
        self.path = directory / STATE_FILE

    def _load(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise HypervisorError(f"{self.path}: unreadable RCT state ({exc})") from exc
        return doc if isinstance(doc, dict) else {}

    def _save(self, doc: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)

    def _vm(self, doc: dict[str, Any], vm_id: str) -> dict[str, Any]:
        entry = doc.setdefault(vm_id, {})
        entry.setdefault("checkpoints", {})
        entry.setdefault("pending", [])
        return entry  # type: ignore[no-any-return]

    def committed(self, vm_id: str, checkpoint: str) -> Committed | None:
        with self._lock:
            found = self._load().get(vm_id, {}).get("checkpoints", {}).get(checkpoint)
        if not isinstance(found, dict):
            return None
        ids = found.get("rct_ids")
        rct: dict[str, Any] = ids if isinstance(ids, dict) else {}
        return Committed(str(found.get("reference_point", "")), {k: str(v) for k, v in rct.items()})

    def record(self, vm_id: str, checkpoint: str, committed: Committed) -> None:
        with self._lock:
            doc = self._load()
            entry = self._vm(doc, vm_id)
            entry["checkpoints"][checkpoint] = committed.to_dict()
            for old in list(entry["checkpoints"])[:-KEEP_CHECKPOINTS]:
                del entry["checkpoints"][old]
            if checkpoint in entry["pending"]:
                entry["pending"].remove(checkpoint)
            self._save(doc)

    def pending(self, vm_id: str) -> list[str]:
        with self._lock:
            return list(self._load().get(vm_id, {}).get("pending", []))

    def set_pending(self, vm_id: str, checkpoint: str, pending: bool) -> None:
        with self._lock:
            doc = self._load()
            entry = self._vm(doc, vm_id)
            if pending and checkpoint not in entry["pending"]:
                entry["pending"].append(checkpoint)
            elif not pending and checkpoint in entry["pending"]:
                entry["pending"].remove(checkpoint)
            self._save(doc)
