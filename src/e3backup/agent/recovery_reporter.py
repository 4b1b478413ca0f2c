"""A bare-metal recovery's reports on its restore run, through the session's endpoints: events
(buffered until the run is taken over, kept while the server is unreachable), progress about
every 2 s (update_run, whose answer carries the server's cancel flag), the session refreshed
every 5 min (seed: long restores must not outlive their token), and the final update.

A rejected session mid-restore (expired, revoked) cancels the restore and is remembered as
`fatal`: nothing more can be reported, and retrying would only feed the server's limiter.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from e3backup.agent.recovery_client import RecoveryClient, ServerUnreachable, SessionRejected
from e3backup.agent.run_context import now_iso
from e3backup.core.cancel import CancelToken
from e3backup.engines.progress import Progress

log = logging.getLogger(__name__)
UPDATE_INTERVAL_S = 2.0
REFRESH_INTERVAL_S = 300.0
LIVE_PCT_CAP = 99.9  # 100 % is the successful end's own update
FINAL_TRIES = 6


class RecoveryReporter:
    def __init__(
        self,
        client: RecoveryClient,
        run_id: int,
        update_interval_s: float = UPDATE_INTERVAL_S,
        refresh_interval_s: float = REFRESH_INTERVAL_S,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.update_interval_s = update_interval_s
        self.refresh_interval_s = refresh_interval_s
        self.refreshes = 0
        self.session_expires_at = ""
        self.fatal: SessionRejected | None = None
        self.claimed = False
        self.cancelled_by_server = False
        self._prefix = f"{run_id}-recover-{secrets.token_hex(4)}"  # unique per process
        self._seq = 0
        self._events: list[dict[str, Any]] = []
        self._progress: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # --- what the restore reports ---------------------------------------------------------------

    def emit(self, message_id: str, level: str = "info", **params: Any) -> None:
        with self._lock:
            self._seq += 1
            self._events.append(
                {
                    "event_id": f"{self._prefix}-{self._seq:06d}",
                    "ts": now_iso(),
                    "type": "error" if level == "error" else "info",
                    "level": "warn" if level == "warning" else level,
                    "message_id": message_id,
                    "params": params,
                }
            )

    def progress(self, p: Progress) -> None:
        with self._lock:
            self._progress = {
                "progress_pct": round(min(p.progress_pct, LIVE_PCT_CAP), 2),
                "bytes_total": p.bytes_total,
                "bytes_processed": p.bytes_processed,
                "bytes_transferred": p.bytes_transferred,
                "speed_bytes_per_sec": int(p.speed_bytes_per_sec),
                "eta_seconds": int(p.eta_seconds) if p.eta_seconds is not None else None,
                "current_item": p.current_item,
            }

    # --- talking to the server ------------------------------------------------------------------

    def claim(self, **fields: Any) -> bool:
        """The first update: the server hands the run to this environment (SessionRejected when
        an agent is restoring it). Returns whether a cancel is already requested."""
        answer = self.client.update_run(self.run_id, status="running", **fields)
        self.claimed = True
        self.flush_events()
        return answer.cancel_requested

    def flush_events(self) -> None:
        """Push buffered events in order; an unreachable server keeps them for the next try."""
        with self._lock:
            pending = list(self._events)
        if not pending or not self.claimed:
            return
        self.client.push_events(self.run_id, pending)
        with self._lock:
            del self._events[: len(pending)]

    @contextmanager
    def running(self, cancel: CancelToken) -> Iterator[None]:
        """Progress, cancel polling and session refresh in a thread while the restore runs."""
        self._stop.clear()
        thread = threading.Thread(target=self._loop, args=(cancel,), name="recover-report")
        thread.daemon = True
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()

    def _loop(self, cancel: CancelToken) -> None:
        next_refresh = time.monotonic() + self.refresh_interval_s
        while not self._stop.wait(self.update_interval_s):
            try:
                if self._tick() and not cancel.cancelled:
                    self.cancelled_by_server = True
                    cancel.cancel("cancel requested on the server")
                if time.monotonic() >= next_refresh:
                    self.session_expires_at = self.client.refresh_session(self.run_id)
                    self.refreshes += 1
                    next_refresh = time.monotonic() + self.refresh_interval_s
                    log.info("recovery session refreshed (expires %s)", self.session_expires_at)
            except ServerUnreachable as exc:
                log.warning("%s; the restore goes on", exc)
            except SessionRejected as exc:
                self.fatal = exc
                cancel.cancel(str(exc))
                return

    def _tick(self) -> bool:
        with self._lock:
            fields = dict(self._progress)
        answer = self.client.update_run(self.run_id, status="running", **fields)
        self.flush_events()
        return answer.cancel_requested

    def finish(self, status: str, retry_wait_s: float = 1.0, **fields: Any) -> bool:
        """The final update (and the last events), retried a few times while the server is
        unreachable; False when it could not be delivered."""
        if self.fatal is not None or not self.claimed:
            return False
        with self._lock:
            final = {**self._progress, **fields, "status": status}
        if status == "success":
            final["progress_pct"] = 100.0
        for attempt in range(FINAL_TRIES):
            try:
                self.flush_events()
                self.client.update_run(self.run_id, **final)
                return True
            except ServerUnreachable as exc:
                log.warning("final report of run %s not delivered: %s", self.run_id, exc)
            except SessionRejected as exc:
                log.warning("final report of run %s refused: %s", self.run_id, exc)
                return False
            time.sleep(retry_wait_s * 2**attempt)
        return False
