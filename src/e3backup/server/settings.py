"""The server's one settings class (pydantic-settings, environment prefix `E3BACKUP_SERVER_`).

The seed's knobs `AGENT_RECLAIM_GRACE_SECONDS` and `AGENT_WATCHDOG_TIMEOUT_SECONDS` are accepted
under their seed names too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_LISTEN = "127.0.0.1:8420"
SQLITE_FILE_NAME = "e3backup-server.db"
KEY_FILE_NAME = "server.key"


def default_data_dir() -> Path:
    """`/var/lib/e3backup` as root, the XDG data dir (`~/.local/share/e3backup`) otherwise."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/e3backup")
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "e3backup"


def _seed_alias(field_name: str, seed_name: str) -> AliasChoices:
    return AliasChoices(f"E3BACKUP_SERVER_{field_name.upper()}", seed_name)


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="E3BACKUP_SERVER_", extra="ignore", populate_by_name=True
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    db_url: str = ""  # empty: SQLite file under data_dir
    listen: str = DEFAULT_LISTEN
    tls_cert: Path | None = None
    tls_key: Path | None = None

    agent_reclaim_grace_s: float = Field(
        180.0, validation_alias=_seed_alias("agent_reclaim_grace_s", "AGENT_RECLAIM_GRACE_SECONDS")
    )
    agent_watchdog_timeout_s: float = Field(
        720.0,
        validation_alias=_seed_alias("agent_watchdog_timeout_s", "AGENT_WATCHDOG_TIMEOUT_SECONDS"),
    )
    cancel_timeout_s: float = 900.0
    agent_poll_interval_s: float = 5.0
    agent_online_window_s: float = 90.0  # last_seen newer than this: online
    scheduler_tick_s: float = 15.0
    watchdog_tick_s: float = 30.0
    background_enabled: bool = True
    command_ttl_s: float = 3600.0
    browse_wait_s: float = 30.0

    session_ttl_s: float = 12 * 3600.0
    session_cookie_secure: bool = False
    auth_failure_limit: int = 20  # failed agent/user logins per window and key before 429
    auth_failure_window_s: float = 60.0
    max_body_bytes: int = 4 * 1024 * 1024

    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = "e3backup@localhost"
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    # Webhooks to loopback, link-local (cloud metadata), private and other non-public addresses
    # are refused (SSRF); turn on for on-prem receivers on the internal network.
    notify_allow_private_targets: bool = False

    # "auto": JSON lines when stderr is not a terminal (systemd, CI), plain lines on a terminal;
    # true/false force either (E3BACKUP_SERVER_LOG_JSON).
    log_json: Literal["auto"] | bool = "auto"
    metrics_token: str = ""  # when set, /metrics needs "Authorization: Bearer <token>"

    @model_validator(mode="after")
    def _check(self) -> ServerSettings:
        if self.agent_reclaim_grace_s >= self.agent_watchdog_timeout_s:
            raise ValueError("agent_reclaim_grace_s must be smaller than agent_watchdog_timeout_s")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        return self

    @property
    def database_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{self.data_dir / SQLITE_FILE_NAME}"

    @property
    def key_path(self) -> Path:
        return self.data_dir / KEY_FILE_NAME

    def listen_host_port(self) -> tuple[str, int]:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"--listen must be HOST:PORT, got {self.listen!r}")
        return host.strip("[]"), int(port)
