"""The `Backend` protocol: the whole contract between the repository and a storage service."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size_bytes: int


@dataclass(frozen=True)
class BackendProperties:
    """What callers may tune for: a human-readable location and a sensible I/O parallelism."""

    location: str
    parallelism: int = 4


@runtime_checkable
class Backend(Protocol):
    """Immutable objects under string keys ('a/b/c', no leading slash, no '..').

    - `put` is atomic: readers see the whole object or nothing; overwriting is allowed and
      idempotent callers rely on that.
    - `get` raises `ObjectNotFound` for a missing key; `length=None` means to the end. A range
      past the end raises `RangeOutsideObject`, never a short read passed off as data.
    - `list(prefix)` yields every object whose key starts with prefix, in no particular order.
    - `delete` of a missing key is not an error.
    """

    def properties(self) -> BackendProperties: ...

    def put(self, key: str, data: bytes | memoryview) -> None: ...

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes: ...

    def stat(self, key: str) -> ObjectInfo: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def delete(self, key: str) -> None: ...

    def close(self) -> None: ...


def check_key(key: str) -> str:
    """Reject keys that could escape a directory or confuse a listing."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key: {key!r}")
    return key
