"""Fixtures for the backend contract suite: one `backend` fixture, one factory per backend.

Adding a backend (for example S3 against a real server) means adding one entry to
`BACKEND_FACTORIES`; every test in `test_backend_contract.py` then runs against it too. A factory
gets the test's `request` so that it can ask for session fixtures (a server) only when its
parameter runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from e3backup.storage.backend import Backend
from e3backup.storage.local import LocalBackend
from e3backup.storage.memory import MemoryBackend
from e3backup.storage.s3 import S3Backend
from fixtures.seaweed import SeaweedServer

BackendFactory = Callable[[pytest.FixtureRequest, Path], Backend]

CONTRACT_BUCKET = "contract"
_prefixes = itertools.count()


def s3_backend(request: pytest.FixtureRequest, _tmp_path: Path) -> Backend:
    """One shared bucket, a fresh key prefix per test: isolation, and the prefix code runs."""
    server: SeaweedServer = request.getfixturevalue("seaweed_server")
    backend = S3Backend(
        CONTRACT_BUCKET,
        f"run/t{next(_prefixes):05d}",
        endpoint_url=server.endpoint,
        region="us-east-1",
        access_key=server.access_key,
        secret_key=server.secret_key,
    )
    backend.ensure_bucket()
    return backend


BACKEND_FACTORIES: dict[str, BackendFactory] = {
    "memory": lambda _request, _tmp_path: MemoryBackend(),
    "local": lambda _request, tmp_path: LocalBackend(tmp_path / "repo"),
    "s3": s3_backend,
}


@pytest.fixture(params=sorted(BACKEND_FACTORIES))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    instance = BACKEND_FACTORIES[request.param](request, tmp_path)
    assert isinstance(instance, Backend)
    yield instance
    instance.close()
