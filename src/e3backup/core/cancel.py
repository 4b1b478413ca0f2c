"""Cooperative cancellation shared by engines, the CLI and (later) the agent.

Engines hold their `CancelToken` explicitly. Code far below them that only waits (the storage
layer's bandwidth and backoff sleeps) cannot be handed one through the `Backend` protocol, so an
engine also *binds* its token to the current context (`with token.bound():`); `sleep` then ends
early when that token is cancelled. Context variables do not cross into worker threads by
themselves: pools that run storage calls submit through `run_in_context`.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from e3backup.core.errors import CancelledError

P = ParamSpec("P")
T = TypeVar("T")

_bound: contextvars.ContextVar[CancelToken | None] = contextvars.ContextVar(
    "e3backup_cancel_token", default=None
)


class CancelToken:
    """Set once by whoever wants the work stopped; long loops call `raise_if_cancelled`."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "cancelled by request") -> None:
        if not self._event.is_set():
            self.reason = reason  # the first reason is the real one
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

    @contextmanager
    def bound(self) -> Iterator[CancelToken]:
        """Make this the token that `sleep` obeys, in this context (see the module doc)."""
        reset = _bound.set(self)
        try:
            yield self
        finally:
            _bound.reset(reset)


def sleep(seconds: float) -> None:
    """`time.sleep`, cut short by a cancel of the bound token: then `CancelledError`."""
    token = _bound.get()
    if token is None:
        time.sleep(seconds)
    elif token.wait(seconds):
        token.raise_if_cancelled()


def run_in_context(function: Callable[P, T]) -> Callable[P, T]:
    """`function` bound to a copy of the caller's context (its cancel token included), for
    `pool.submit(run_in_context(f), ...)`: pool threads do not inherit context variables."""
    context = contextvars.copy_context()

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        # A Context can be entered by one thread at a time: each call runs in its own copy.
        return context.copy().run(function, *args, **kwargs)

    return run
