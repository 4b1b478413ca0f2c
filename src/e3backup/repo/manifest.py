"""Snapshots (manifests): what was backed up, when, and the pages that rebuild each disk."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from e3backup.core.errors import FormatError

MANIFEST_VERSION = 1


@dataclass
class DiskRecord:
    name: str
    size_bytes: int
    chunk_size: int
    pages: list[str]  # hex ids of index pages, in disk order
    change_token: str | None = None
    bytes_read: int = 0
    bytes_changed: int = 0  # bytes of chunks not already in the parent
    bytes_uploaded: int = 0  # encoded bytes of chunks new to the repository
    chunks_zero: int = 0
    read_plan: str = "full"  # "full" | "incremental"
    read_plan_reason: str = ""


@dataclass
class Snapshot:
    id: str
    time: str  # ISO 8601, UTC
    hostname: str
    source_type: str  # "image", "vm", ...
    source_id: str
    source_name: str  # the path or VM name, for people
    backup_type: str  # "Full" | "Incremental"
    parent: str | None
    disks: list[DiskRecord]
    tags: list[str] = field(default_factory=list)
    consistency_level: str | None = None
    duration_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # VM configuration and such

    def disk(self, name: str) -> DiskRecord:
        for disk in self.disks:
            if disk.name == name:
                return disk
        names = ", ".join(d.name for d in self.disks)
        raise KeyError(f"snapshot {self.id[:12]} has no disk {name!r} (disks: {names})")

    def to_json(self) -> bytes:
        doc = asdict(self)
        doc["version"] = MANIFEST_VERSION
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Snapshot:
        try:
            doc = json.loads(data)
            if doc.pop("version") != MANIFEST_VERSION:
                raise FormatError("snapshot manifest has an unknown version")
            doc["disks"] = [DiskRecord(**d) for d in doc["disks"]]
            return cls(**doc)
        except (ValueError, KeyError, TypeError) as exc:
            raise FormatError(f"snapshot manifest is malformed: {exc}") from exc
