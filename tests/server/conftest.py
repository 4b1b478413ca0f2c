"""Fixtures of the control-server tests: a live server on SQLite or PostgreSQL, and a service
context on a migrated SQLite database for unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from e3backup.server.context import ServerContext
from e3backup.server.db import migrate
from e3backup.server.settings import ServerSettings
from fixtures.postgres import pg_cluster, pg_url
from fixtures.server import make_server

__all__ = ["make_server", "pg_cluster", "pg_url", "server_ctx"]


@pytest.fixture
def server_ctx(tmp_path: Path) -> Iterator[ServerContext]:
    ctx = ServerContext.open(ServerSettings(data_dir=tmp_path / "data"))
    migrate.upgrade(ctx.engine)
    yield ctx
    ctx.close()
