"""Deterministic fault injection for tests: the faults a real store produces, on demand.

Faults apply to keys starting with `keys` (all keys by default; `list` is matched by its prefix).
Call numbers count per method from 1, over matching calls only. With the same `seed` and the same
sequence of calls, the same bits flip and the same writes are truncated.

- `fail_calls={"get": {3}}`: the 3rd get raises a persistent `StorageError`.
- `transient_failures={"put": 2}`: the first 2 puts raise `TransientStorageError`, then succeed.
- `fail_after=N`: after N successful calls in total, every call fails (an outage that stays).
- `flip_bits=p`: each get flips one random bit of the returned data with probability p.
- `truncate_puts=p`: each put silently stores a random-length prefix with probability p, the way
  a lying disk or a broken proxy would; the call still succeeds.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Collection, Iterator, Mapping

from e3backup.core.errors import StorageError, TransientStorageError
from e3backup.storage.backend import Backend, BackendProperties, ObjectInfo

METHODS = ("put", "get", "stat", "list", "delete")


class FaultyBackend:
    def __init__(
        self,
        inner: Backend,
        *,
        fail_calls: Mapping[str, Collection[int]] | None = None,
        transient_failures: Mapping[str, int] | None = None,
        fail_after: int | None = None,
        flip_bits: float = 0.0,
        truncate_puts: float = 0.0,
        keys: str = "",
        seed: int = 0,
    ) -> None:
        for name in [*(fail_calls or {}), *(transient_failures or {})]:
            if name not in METHODS:
                raise ValueError(f"unknown backend method {name!r}")
        self.inner = inner
        self.fail_calls = {k: set(v) for k, v in (fail_calls or {}).items()}
        self.transient_failures = dict(transient_failures or {})
        self.fail_after = fail_after
        self.flip_bits = flip_bits
        self.truncate_puts = truncate_puts
        self.keys = keys
        self.calls: Counter[str] = Counter()  # matching calls seen, per method
        self.injected: Counter[str] = Counter()  # faults injected, per kind
        self._successes = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def properties(self) -> BackendProperties:
        return self.inner.properties()

    def put(self, key: str, data: bytes | memoryview) -> None:
        if self._before("put", key) and self._chance(self.truncate_puts):
            data = bytes(data)
            with self._lock:
                cut = self._rng.randrange(len(data)) if data else 0
                self.injected["truncate"] += 1
            data = data[:cut]
        self.inner.put(key, data)
        self._succeeded()

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        matches = self._before("get", key)
        data = self.inner.get(key, offset, length)
        self._succeeded()
        if matches and data and self._chance(self.flip_bits):
            with self._lock:
                bit = self._rng.randrange(len(data) * 8)
                self.injected["flip"] += 1
            flipped = bytearray(data)
            flipped[bit // 8] ^= 1 << (bit % 8)
            data = bytes(flipped)
        return data

    def stat(self, key: str) -> ObjectInfo:
        self._before("stat", key)
        info = self.inner.stat(key)
        self._succeeded()
        return info

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._before("list", prefix)
        yield from self.inner.list(prefix)
        self._succeeded()

    def delete(self, key: str) -> None:
        self._before("delete", key)
        self.inner.delete(key)
        self._succeeded()

    def close(self) -> None:
        self.inner.close()

    def _before(self, method: str, key: str) -> bool:
        """Count the call and raise an injected failure if one is due; True if `key` matches."""
        if not key.startswith(self.keys):
            return False
        with self._lock:
            self.calls[method] += 1
            number = self.calls[method]
            if self.fail_after is not None and self._successes >= self.fail_after:
                self.injected["outage"] += 1
                raise StorageError(f"injected outage: {method} {key}")
            if number in self.fail_calls.get(method, ()):
                self.injected["fail"] += 1
                raise StorageError(f"injected failure: {method} #{number} {key}")
            if number <= self.transient_failures.get(method, 0):
                self.injected["transient"] += 1
                raise TransientStorageError(f"injected transient failure: {method} {key}")
        return True

    def _succeeded(self) -> None:
        with self._lock:
            self._successes += 1

    def _chance(self, probability: float) -> bool:
        if probability <= 0:
            return False
        with self._lock:
            return self._rng.random() < probability
