"""Persistent dirty bitmaps as change-tracking tokens: naming, and reconciling what QEMU holds
with the token the parent snapshot recorded (after a failed or killed backup).

Rotation (VM_FORMATS C.3): at the point in time a new bitmap starts recording and the token's
bitmap is disabled, so writes during the backup land in the new one. After the snapshot is
durable the old bitmap is removed (commit); on failure the new one is merged back into the old
one, which records again (rollback), so the parent's token stays valid.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from e3backup.sources.hypervisors.qemu.qmp import QmpClient

log = logging.getLogger(__name__)

PREFIX = "e3b-"


@dataclass(frozen=True)
class BitmapState:
    name: str
    recording: bool
    busy: bool
    inconsistent: bool
    persistent: bool
    count: int


def new_bitmap_name(previous: str | None) -> str:
    generation = 1
    if previous and previous.startswith(PREFIX):
        try:
            generation = int(previous.split("-")[1]) + 1
        except (IndexError, ValueError):
            generation = 1
    return f"{PREFIX}{generation}-{secrets.token_hex(3)}"


def node_bitmaps(qmp: QmpClient, node: str) -> list[BitmapState]:
    nodes: list[dict[str, Any]] = qmp.execute("query-named-block-nodes", {"flat": True})
    for info in nodes:
        if info.get("node-name") == node:
            return [
                BitmapState(
                    name=b["name"],
                    recording=bool(b.get("recording")),
                    busy=bool(b.get("busy")),
                    inconsistent=bool(b.get("inconsistent")),
                    persistent=bool(b.get("persistent")),
                    count=int(b.get("count", 0)),
                )
                for b in info.get("dirty-bitmaps", [])
            ]
    return []


def reconcile(qmp: QmpClient, node: str, token: str | None) -> tuple[bool, str]:
    """Make `token` the one recording bitmap of ours on `node`, if it can be trusted.

    Returns (usable, reason). Other bitmaps of ours are leftovers of an interrupted backup:
    recording ones hold writes made since that backup's point, so they are merged into the
    token's bitmap before removal. Unusable → every bitmap of ours is removed (full read).
    """
    ours = [b for b in node_bitmaps(qmp, node) if b.name.startswith(PREFIX)]
    by_name = {b.name: b for b in ours}
    current = by_name.get(token) if token else None
    if not token:
        reason = "no change-tracking token in the parent snapshot"
    elif current is None:
        reason = f"dirty bitmap {token} is gone (deleted, or QEMU restarted without it)"
    elif current.inconsistent:
        reason = f"dirty bitmap {token} is inconsistent (QEMU did not shut down cleanly)"
    elif not current.persistent:
        reason = f"dirty bitmap {token} is not persistent"
    else:
        reason = ""
    if reason:
        for bitmap in ours:
            _remove(qmp, node, bitmap.name)
        return False, reason + ": full read"
    assert token is not None and current is not None
    for bitmap in ours:
        if bitmap.name == token:
            continue
        if bitmap.recording and not bitmap.inconsistent:
            merge = {"node": node, "target": token, "bitmaps": [bitmap.name]}
            qmp.execute("block-dirty-bitmap-merge", merge)
        _remove(qmp, node, bitmap.name)
    if not current.recording:
        qmp.execute("block-dirty-bitmap-enable", {"node": node, "name": token})
    return True, ""


def rollback(qmp: QmpClient, node: str, old: str, new: str) -> None:
    """Undo a rotation: everything the new bitmap saw goes back into the old one."""
    qmp.execute("block-dirty-bitmap-merge", {"node": node, "target": old, "bitmaps": [new]})
    qmp.execute("block-dirty-bitmap-enable", {"node": node, "name": old})
    _remove(qmp, node, new)


def remove(qmp: QmpClient, node: str, name: str) -> None:
    _remove(qmp, node, name)


def _remove(qmp: QmpClient, node: str, name: str) -> None:
    qmp.execute("block-dirty-bitmap-remove", {"node": node, "name": name})
