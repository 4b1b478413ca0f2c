"""Progress reporting with the seed's wire names (RunUpdate), throttled for humans and agents."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    bytes_total: int
    bytes_processed: int  # disk bytes dealt with (read, skipped as zero or unchanged)
    bytes_transferred: int  # bytes written to the repository (backup) or the target (restore)
    bytes_read: int  # bytes actually read from the source
    speed_bytes_per_sec: float
    eta_seconds: float | None
    current_item: str

    @property
    def progress_pct(self) -> float:
        return 100.0 if self.bytes_total == 0 else 100.0 * self.bytes_processed / self.bytes_total


ProgressCallback = Callable[[Progress], None]


class TrailingThrottle:
    """Runs `fire` at most once per `interval_s`. A call inside the interval is deferred to its
    end rather than dropped, so the newest state always goes out even when nothing follows (a
    backup waiting on slow uploads reports nothing new for many seconds)."""

    def __init__(self, interval_s: float, fire: Callable[[], None]) -> None:
        self._interval_s = interval_s
        self._fire = fire
        self._lock = threading.Lock()
        self._last = float("-inf")
        self._timer: threading.Timer | None = None

    def __call__(self, force: bool = False) -> None:
        with self._lock:
            wait = self._interval_s - (time.monotonic() - self._last)
            if not force and (wait > 0 or self._timer is not None):
                if self._timer is None:
                    self._timer = threading.Timer(max(wait, 0.0), self._deferred)
                    self._timer.daemon = True
                    self._timer.start()
                return
            self._cancel_locked()
            self._last = time.monotonic()
        self._fire()

    def cancel(self) -> None:
        """Drop a deferred call (the caller is about to fire for the last time itself)."""
        with self._lock:
            self._cancel_locked()

    def _cancel_locked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _deferred(self) -> None:
        with self._lock:
            self._timer = None
            self._last = time.monotonic()
        self._fire()


class ProgressTracker:
    """Thread-safe counters; calls the callback at most every `interval_s`, with the newest
    counters at the end of an interval in which they changed, and whenever `report()` is called."""

    def __init__(
        self,
        bytes_total: int,
        callback: ProgressCallback | None = None,
        interval_s: float = 0.25,
        current_item: str = "",
    ) -> None:
        self.bytes_total = bytes_total
        self.current_item = current_item
        self._callback = callback
        self._lock = threading.Lock()
        self._report_lock = threading.Lock()
        self._started = time.monotonic()
        self._throttle = TrailingThrottle(interval_s, self._report_now)
        self.bytes_processed = 0
        self.bytes_transferred = 0
        self.bytes_read = 0

    def add(self, processed: int = 0, transferred: int = 0, read: int = 0) -> None:
        with self._lock:
            self.bytes_processed += processed
            self.bytes_transferred += transferred
            self.bytes_read += read
        self._throttle()

    def snapshot(self) -> Progress:
        with self._lock:
            elapsed = max(time.monotonic() - self._started, 1e-6)
            speed = self.bytes_processed / elapsed
            remaining = self.bytes_total - self.bytes_processed
            eta = remaining / speed if speed > 0 else None
            return Progress(
                bytes_total=self.bytes_total,
                bytes_processed=self.bytes_processed,
                bytes_transferred=self.bytes_transferred,
                bytes_read=self.bytes_read,
                speed_bytes_per_sec=speed,
                eta_seconds=eta,
                current_item=self.current_item,
            )

    def report(self) -> None:
        """Report now (and drop a deferred report: this one is newer)."""
        self._throttle.cancel()
        self._report_now()

    def _report_now(self) -> None:
        if self._callback is not None:
            with self._report_lock:  # serialized, so callbacks see counters only grow
                self._callback(self.snapshot())

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._started
