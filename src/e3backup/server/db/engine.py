"""Engine and session factory from settings. SQLite: WAL, foreign keys and a busy timeout on
every connection; PostgreSQL through psycopg 3 (`postgresql+psycopg://`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from e3backup.core.errors import UsageError

SQLITE_BUSY_TIMEOUT_MS = 15_000
_SUPPORTED_PREFIXES = ("sqlite:///", "postgresql+psycopg://", "postgresql://")


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def normalise_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here (SQLAlchemy's default would be psycopg2)."""
    if not url.startswith(_SUPPORTED_PREFIXES):
        raise UsageError(
            "--db must be sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB, "
            f"got {url.split(':', 1)[0]}:…"
        )
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str, pool_size: int = 10) -> Engine:
    url = normalise_url(url)
    if is_sqlite(url):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=pool_size,
            max_overflow=pool_size * 2,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # No pool_pre_ping: it costs a round trip on every checkout (most of an idle agent poll).
    # After a database restart the first statement on each stale connection fails and
    # SQLAlchemy invalidates the pool; callers retry (agents do, on a 5xx).
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size * 2)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back on an exception."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
