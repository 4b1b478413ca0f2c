"""Fixtures for the backend contract suite: one `backend` fixture, one factory per backend.

Adding a backend (for example S3 against a real server) means adding one entry to
`BACKEND_FACTORIES`; every test in `test_backend_contract.py` then runs against it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from e3backup.storage.backend import Backend
from e3backup.storage.local import LocalBackend
from e3backup.storage.memory import MemoryBackend

BackendFactory = Callable[[Path], Backend]

BACKEND_FACTORIES: dict[str, BackendFactory] = {
    "memory": lambda _tmp_path: MemoryBackend(),
    "local": lambda tmp_path: LocalBackend(tmp_path / "repo"),
}


@pytest.fixture(params=sorted(BACKEND_FACTORIES))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    instance = BACKEND_FACTORIES[request.param](tmp_path)
    assert isinstance(instance, Backend)
    yield instance
    instance.close()
