"""Retry transient backend failures with jittered exponential backoff.

Only `TransientStorageError` is retried; anything else (a missing object, rejected credentials, a
bad range) surfaces at once. Giving up re-raises the last error, so the user sees the real cause.
Every retry is logged at WARNING: a slow or flaky store should be visible, not silently absorbed.
Backoff waits obey the cancel token bound by the engine (`core.cancel.sleep`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from e3backup.core import cancel
from e3backup.core.errors import TransientStorageError
from e3backup.storage.backend import Backend, BackendProperties, ObjectInfo

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt n (from 1) waits `min(max_delay_s, base_delay_s * 2**(n-1))`, scaled by a random
    factor in [0.5, 1] so that parallel workers do not retry in lockstep."""

    max_attempts: int = 8
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_elapsed_s: float = 300.0

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        return min(self.max_delay_s, self.base_delay_s * 2.0 ** (attempt - 1)) * rng.uniform(0.5, 1)


class RetryBackend:
    def __init__(
        self,
        inner: Backend,
        policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], None] = cancel.sleep,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        self.inner = inner
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._rng = random.Random(seed)

    def properties(self) -> BackendProperties:
        return self.inner.properties()

    def put(self, key: str, data: bytes | memoryview) -> None:
        self._call("put", key, lambda: self.inner.put(key, data))

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._call("get", key, lambda: self.inner.get(key, offset, length))

    def stat(self, key: str) -> ObjectInfo:
        return self._call("stat", key, lambda: self.inner.stat(key))

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.inner.delete(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """A listing that fails midway starts over and skips keys already yielded."""
        seen: set[str] = set()
        attempt = 1
        started = self._clock()
        while True:
            try:
                for info in self.inner.list(prefix):
                    if info.key not in seen:
                        seen.add(info.key)
                        yield info
                return
            except TransientStorageError as exc:
                self._wait_or_raise("list", prefix or "/", attempt, started, exc)
                attempt += 1

    def close(self) -> None:
        self.inner.close()

    def _call(self, operation: str, key: str, call: Callable[[], T]) -> T:
        attempt = 1
        started = self._clock()
        while True:
            try:
                return call()
            except TransientStorageError as exc:
                self._wait_or_raise(operation, key, attempt, started, exc)
                attempt += 1

    def _wait_or_raise(
        self, operation: str, key: str, attempt: int, started: float, exc: TransientStorageError
    ) -> None:
        delay = self.policy.delay_s(attempt, self._rng)
        elapsed = self._clock() - started
        if attempt >= self.policy.max_attempts or elapsed + delay > self.policy.max_elapsed_s:
            log.error("%s %s failed after %d attempts: %s", operation, key, attempt, exc)
            raise exc
        log.warning(
            "%s %s failed (attempt %d of %d), retrying in %.1f s: %s",
            operation,
            key,
            attempt,
            self.policy.max_attempts,
            delay,
            exc,
        )
        self._sleep(delay)
