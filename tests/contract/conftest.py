"""Fixtures for the backend contract suite: one `backend` fixture, one factory per backend.

The factories live in `fixtures.backends` (the repository tests use them too): adding a backend
means adding one entry to `BACKEND_FACTORIES` there, and every test in `test_backend_contract.py`
then runs against it too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from e3backup.storage.backend import Backend
from fixtures.backends import BACKEND_FACTORIES, BACKEND_NAMES


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    instance = BACKEND_FACTORIES[request.param](request, tmp_path)
    assert isinstance(instance, Backend)
    yield instance
    instance.close()
