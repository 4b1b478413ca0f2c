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


class ProgressTracker:
    """Thread-safe counters; calls the callback at most every `interval_s` (and at the end)."""

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
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._report_lock = threading.Lock()
        self._started = time.monotonic()
        self._last_report = 0.0
        self.bytes_processed = 0
        self.bytes_transferred = 0
        self.bytes_read = 0

    def add(self, processed: int = 0, transferred: int = 0, read: int = 0) -> None:
        with self._lock:
            self.bytes_processed += processed
            self.bytes_transferred += transferred
            self.bytes_read += read
            now = time.monotonic()
            due = now - self._last_report >= self._interval_s
            if due:
                self._last_report = now
        if due:
            self.report()

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
        if self._callback is not None:
            with self._report_lock:  # serialized, so callbacks see counters only grow
                self._callback(self.snapshot())

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._started
