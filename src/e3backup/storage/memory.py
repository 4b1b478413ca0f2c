"""An in-process backend for tests: a dict guarded by a lock."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from e3backup.core.errors import ObjectNotFound, RangeOutsideObject, StorageError
from e3backup.storage.backend import BackendProperties, ObjectInfo, check_key


class MemoryBackend:
    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def properties(self) -> BackendProperties:
        return BackendProperties(location="memory:", parallelism=4)

    def put(self, key: str, data: bytes | memoryview) -> None:
        check_key(key)
        with self._lock:
            self._objects[key] = bytes(data)

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        check_key(key)
        with self._lock:
            try:
                data = self._objects[key]
            except KeyError:
                raise ObjectNotFound(f"object not found: {key}") from None
        return slice_range(key, data, offset, length)

    def stat(self, key: str) -> ObjectInfo:
        check_key(key)
        with self._lock:
            if key not in self._objects:
                raise ObjectNotFound(f"object not found: {key}")
            return ObjectInfo(key, len(self._objects[key]))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._lock:
            items = [
                ObjectInfo(k, len(v)) for k, v in self._objects.items() if k.startswith(prefix)
            ]
        yield from items

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            self._objects.pop(key, None)

    def close(self) -> None:
        pass


def slice_range(key: str, data: bytes, offset: int, length: int | None) -> bytes:
    """Apply the protocol's range rules to a whole object held in memory."""
    if offset < 0 or (length is not None and length < 0):
        raise StorageError(f"invalid range {offset}+{length} for {key}")
    end = len(data) if length is None else offset + length
    if max(offset, end) > len(data):
        raise RangeOutsideObject(f"range {offset}+{length} outside {key} ({len(data)} bytes)")
    return data[offset:end]
