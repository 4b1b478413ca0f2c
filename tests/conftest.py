"""Fixtures shared by every test directory: real servers started once per session,
`repo_backend`, the storage backend of the repository tests, on every backend in turn, and
`browser`, the one chromium of the session."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from e3backup.repo.keys import FAST_KDF_ENV
from e3backup.storage.backend import Backend
from fixtures.backends import BACKEND_FACTORIES, BACKEND_NAMES
from fixtures.browser import chromium
from fixtures.seaweed import seaweed_server

__all__ = ["browser", "make_repo_backend", "repo_backend", "seaweed_server"]

# Key files made by tests use cheap argon2id parameters (the calibrated ones cost ~0.75 s each);
# tests/unit/repo/test_keys.py checks the calibrated default without it.
os.environ.setdefault(FAST_KDF_ENV, "1")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One chromium per test process. Playwright's sync API allows one instance per thread
    while it runs (a second one raises "Sync API inside the asyncio loop"), so every browser
    test in a process -- tests/web and the quickstart test, which xdist may put on one
    worker -- shares this one and makes its own context."""
    with chromium() as launched:
        yield launched


@pytest.fixture(params=BACKEND_NAMES)
def make_repo_backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], Backend]]:
    """Makes fresh, empty backends of one kind (memory, local, s3), closed at teardown.

    A local backend lives outside the test's `tmp_path`, which stays the test's own.
    """
    made: list[Backend] = []

    def make() -> Backend:
        directory = tmp_path_factory.mktemp("backend")
        made.append(BACKEND_FACTORIES[request.param](request, directory))
        return made[-1]

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def repo_backend(make_repo_backend: Callable[[], Backend]) -> Backend:
    """A fresh, empty backend; parametrized over memory, local and s3."""
    return make_repo_backend()
