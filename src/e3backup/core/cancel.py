"""Cooperative cancellation shared by engines, the CLI and (later) the agent."""

from __future__ import annotations

import threading

from e3backup.core.errors import CancelledError


class CancelToken:
    """Set once by whoever wants the work stopped; long loops call `raise_if_cancelled`."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "cancelled by request") -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise CancelledError(self.reason or "cancelled")

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to timeout_s; True if cancelled meanwhile."""
        return self._event.wait(timeout_s)
