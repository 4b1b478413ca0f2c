"""The run state machine (pure): queued → starting → running → one terminal status.

Status moves only forward; a terminal status is final. Repeating the current status is a
no-op (an agent retrying its last update), anything else backwards is refused.
"""

from __future__ import annotations

from e3backup.server.db.models.runs import TERMINAL_STATUSES
from e3backup.server.services.errors import Conflict, Invalid

_RANK = {"queued": 0, "starting": 1, "running": 2, **dict.fromkeys(TERMINAL_STATUSES, 3)}


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


def transition(current: str, new: str) -> bool:
    """True when `current → new` changes the status; Conflict when it is not allowed."""
    if new not in _RANK:
        raise Invalid(f"unknown run status {new!r}", "status")
    if new == current:
        return False
    if is_terminal(current):
        raise Conflict(f"run already ended as {current}; it cannot become {new}")
    if _RANK[new] <= _RANK[current]:
        raise Conflict(f"run status moves only forward: {current} → {new} refused")
    return True
