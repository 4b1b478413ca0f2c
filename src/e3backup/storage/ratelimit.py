"""Upload and download bandwidth caps (the seed's `bandwidth_limit_kbps`), in KiB/s.

A token bucket per direction, shared by all threads. It caps the *average* rate: an object is
charged whole (uploads before sending, downloads after receiving, when the size is known), and a
request larger than the bucket runs it into debt that later requests wait out. The bucket holds
0.1 s of traffic, so short bursts are smoothed but an idle period does not bank a large burst.
Waits obey the cancel token bound by the engine (`core.cancel.sleep`): a cancelled backup does
not sit out the debt of packs it will never send, and their tokens are given back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from e3backup.core import cancel
from e3backup.core.errors import CancelledError
from e3backup.storage.backend import Backend, BackendProperties, ObjectInfo

log = logging.getLogger(__name__)

KIB = 1024
BURST_S = 0.1


class TokenBucket:
    def __init__(
        self,
        rate_bytes_per_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = cancel.sleep,
        name: str = "bandwidth",
    ) -> None:
        if rate_bytes_per_s <= 0:
            raise ValueError("a rate limit must be positive")
        self.rate_bytes_per_s = rate_bytes_per_s
        self.capacity_bytes = rate_bytes_per_s * BURST_S
        self._tokens = self.capacity_bytes
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()
        self.name = name

    def consume(self, size_bytes: int) -> None:
        """Take `size_bytes` tokens, sleeping (outside the lock) until the debt is paid."""
        with self._lock:
            now = self._clock()
            self._tokens = min(
                self.capacity_bytes, self._tokens + (now - self._last) * self.rate_bytes_per_s
            )
            self._last = now
            self._tokens -= size_bytes
            wait_s = -self._tokens / self.rate_bytes_per_s if self._tokens < 0 else 0.0
        if wait_s <= 0:
            return
        log.debug("%d bytes wait %.1f s for the %s limit", size_bytes, wait_s, self.name)
        try:
            self._sleep(wait_s)
        except CancelledError:
            with self._lock:
                self._tokens += size_bytes  # never sent: the next transfer does not pay for it
            raise


class RateLimitedBackend:
    def __init__(
        self,
        inner: Backend,
        *,
        upload_kibps: int | None = None,
        download_kibps: int | None = None,
    ) -> None:
        self.inner = inner
        self._upload = TokenBucket(upload_kibps * KIB, name="upload") if upload_kibps else None
        self._download = (
            TokenBucket(download_kibps * KIB, name="download") if download_kibps else None
        )

    def properties(self) -> BackendProperties:
        return self.inner.properties()

    def put(self, key: str, data: bytes | memoryview) -> None:
        if self._upload is not None:
            self._upload.consume(memoryview(data).nbytes)
        self.inner.put(key, data)

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        data = self.inner.get(key, offset, length)
        if self._download is not None:
            self._download.consume(len(data))
        return data

    def stat(self, key: str) -> ObjectInfo:
        return self.inner.stat(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def close(self) -> None:
        self.inner.close()
