"""What a running server shares between requests and background loops."""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from e3backup.server.crypto import SecretBox
from e3backup.server.db.engine import make_engine, make_session_factory
from e3backup.server.services.agent_gate import AgentGate
from e3backup.server.services.auth import FailureLimiter
from e3backup.server.settings import SQLITE_FILE_NAME, ServerSettings


@dataclass
class ServerContext:
    settings: ServerSettings
    engine: Engine
    sessions: sessionmaker[Session]
    box: SecretBox
    limiter: FailureLimiter
    gate: AgentGate
    autocommit: Engine  # the same pool; each statement its own transaction (hot agent calls)

    @classmethod
    def open(cls, settings: ServerSettings) -> ServerContext:
        """Engine, key file (created 0600 on first start) and limiter; no migration here."""
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not settings.db_url:  # the default SQLite file holds hashes and sealed secrets: 0600
            os.close(os.open(settings.data_dir / SQLITE_FILE_NAME, os.O_CREAT | os.O_RDWR, 0o600))
        engine = make_engine(settings.database_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_session_factory(engine),
            box=SecretBox.from_key_file(settings.key_path),
            limiter=FailureLimiter(settings.auth_failure_limit, settings.auth_failure_window_s),
            gate=AgentGate(engine),
            autocommit=engine.execution_options(isolation_level="AUTOCOMMIT"),
        )

    def close(self) -> None:
        self.engine.dispose()
