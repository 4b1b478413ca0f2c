"""What a handler running in the engine process sees: the task, a cancel token, and `emit`,
`progress` and `register_cleanup`, which travel to the agent process as messages.

Messages (child → agent): ("event", {message_id, level, params, ts}), ("progress", {...RunUpdate
names}), ("log", {ts, level, message}), ("cleanup", {id, argv}), ("cleanup_done", {id}),
("result", {status, error, ...update fields}). Agent → child: ("cancel", reason).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from e3backup.core.cancel import CancelToken
from e3backup.core.ids import new_id
from e3backup.engines.progress import Progress, TrailingThrottle

Send = Callable[[tuple[str, dict[str, Any]]], None]
PROGRESS_INTERVAL_S = 0.5
# Every byte read is not the end: uploads and the commit follow (a small disk is read into the
# pack buffers at once and then uploads for a long time), so live progress stops short of 100.
LIVE_PCT_MAX = 99.0


@dataclass
class EngineTask:
    """One unit of work for the engine process (picklable: it crosses the process boundary)."""

    kind: str  # backup | restore | maintenance | test_destination
    run_id: int | None
    job: dict[str, Any] = field(repr=False)
    payload: dict[str, Any] = field(default_factory=dict, repr=False)
    qemu: dict[str, Any] = field(default_factory=dict)
    hyperv: dict[str, Any] = field(default_factory=dict)  # the config's [hyperv] section
    log_level: int = 20

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line."""
        names = ("repository_password", "dest_access_key", "dest_secret_key", "password")
        values = [self.job.get(n) for n in names] + [self.payload.get(n) for n in names]
        return [v for v in values if isinstance(v, str) and len(v) >= 4]


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class RunContext:
    def __init__(self, task: EngineTask, send: Send, cancel: CancelToken) -> None:
        self.task = task
        self.cancel = cancel
        self._send = send
        self._latest: dict[str, Any] | None = None  # the newest RunUpdate progress fields
        self._send_lock = threading.Lock()  # progress goes out in order, newest last
        self._throttle = TrailingThrottle(PROGRESS_INTERVAL_S, self._send_latest)
        self.offset_processed = 0  # for cumulative progress over several disks
        self.offset_transferred = 0
        self.bytes_total: int | None = None

    def emit(self, message_id: str, level: str = "info", **params: Any) -> None:
        params = {k: v for k, v in params.items() if v is not None}
        self._send(
            ("event", {"message_id": message_id, "level": level, "params": params, "ts": now_iso()})
        )

    def progress(self, p: Progress, force: bool = False) -> None:
        """Engine progress callback, throttled (the newest value is sent at the end of each
        interval); cumulative when offsets are set. The update is computed now, with the
        offsets of now, so a deferred send never mixes one disk's bytes with the next's."""
        total = self.bytes_total if self.bytes_total is not None else p.bytes_total
        processed = self.offset_processed + p.bytes_processed
        pct = 100.0 if total == 0 else 100.0 * processed / total
        pct = min(LIVE_PCT_MAX, pct)  # 100 is the final update's, once the run succeeded
        self._latest = {
            "progress_pct": round(pct, 2),
            "bytes_total": total,
            "bytes_processed": processed,
            "bytes_transferred": self.offset_transferred + p.bytes_transferred,
            "speed_bytes_per_sec": int(p.speed_bytes_per_sec),
            "eta_seconds": int(p.eta_seconds) if p.eta_seconds is not None else None,
            "current_item": p.current_item,
        }
        self._throttle(force=force or p.bytes_processed >= p.bytes_total)

    def _send_latest(self) -> None:
        with self._send_lock:
            if self._latest is not None:
                self._send(("progress", self._latest))

    def register_cleanup(self, argv: list[str]) -> str:
        """A command the agent runs if this process dies before `cleanup_done(id)`."""
        cleanup_id = new_id()[:16]
        self._send(("cleanup", {"id": cleanup_id, "argv": list(argv)}))
        return cleanup_id

    def cleanup_done(self, cleanup_id: str) -> None:
        self._send(("cleanup_done", {"id": cleanup_id}))
