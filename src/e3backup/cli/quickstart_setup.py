"""The pieces `e3backup quickstart` sets up in its directory: the server's database (tenant, admin
user, tokens), the detached server and agent processes (PID files), and the enrolled agent.

Everything is idempotent: what exists is reused, a stale PID file means "start it again", and a
process counts as ours only while its command line names this directory (exec.pidfile).
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from e3backup.cli.admin_cmd import cli_actor, open_database
from e3backup.core.errors import CommandFailed, UsageError
from e3backup.exec import pidfile
from e3backup.exec.command import Command
from e3backup.exec.daemon import Daemon

TENANT = "demo"
ADMIN_EMAIL = "admin@demo.local"
DEMO_POLL_INTERVAL_S = 1.0  # a local demo: the agent picks up "run now" within a second
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Layout:
    """Where everything lives under the quickstart directory (absolute paths: they are the
    markers that tell our processes from others)."""

    root: Path

    @classmethod
    def at(cls, directory: Path) -> Layout:
        return cls(directory.expanduser().resolve())

    @property
    def server_dir(self) -> Path:
        return self.root / "server"

    @property
    def server_pid(self) -> Path:
        return self.root / "server.pid"

    @property
    def server_log(self) -> Path:
        return self.root / "server.log"

    @property
    def server_url_file(self) -> Path:
        return self.root / "server-url"

    @property
    def agent_config(self) -> Path:
        return self.root / "agent.toml"

    @property
    def agent_pid(self) -> Path:
        return self.root / "agent.pid"

    @property
    def agent_log(self) -> Path:
        return self.root / "agent.log"

    @property
    def admin_password(self) -> Path:
        return self.root / "admin-password"

    @property
    def api_token(self) -> Path:
        return self.root / "api-token"

    @property
    def image(self) -> Path:
        return self.root / "disk.img"

    @property
    def repository(self) -> Path:
        return self.root / "repo"

    @property
    def server_marker(self) -> str:
        """What the server's command line holds (see start_server)."""
        return f"--data-dir {self.server_dir}"

    @property
    def agent_marker(self) -> str:
        return f"--config {self.agent_config}"

    def server_running(self) -> int | None:
        return pidfile.running_pid(self.server_pid, self.server_marker)

    def agent_running(self) -> int | None:
        return pidfile.running_pid(self.agent_pid, self.agent_marker)


def write_secret(path: Path, text: str) -> None:
    """Owner-only from the first byte (0600), replacing any previous file."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


def read_secret(path: Path) -> str:
    return path.read_text().strip()


# --- the database -------------------------------------------------------------------------------


def bootstrap_database(layout: Layout) -> str | None:
    """Migrate; create tenant, admin user and API token unless they exist. Returns the admin
    password when it was made now (to be shown once), else None."""
    from e3backup.server.services import audit, auth, tenants, users
    from e3backup.server.services.errors import NotFound

    new_password = None
    with open_database(layout.server_dir, None) as session:
        try:
            tenant = tenants.tenant_by_name(session, TENANT)
        except NotFound:
            tenant = tenants.create_tenant(session, TENANT)
            audit.record(
                session, cli_actor(session, tenant.id), "tenant.create", "tenant", tenant.id
            )
        actor = cli_actor(session, tenant.id)
        user = users.user_by_email(session, ADMIN_EMAIL)
        if user is None or not layout.admin_password.exists():
            password = secrets.token_urlsafe(18)
            if user is None:
                user = users.create_user(session, tenant.id, ADMIN_EMAIL, password, "admin")
                audit.record(session, actor, "user.create", "user", user.id)
            else:  # the password file was deleted: the old password is gone with it
                user.password_hash = users.hash_password(password)
            write_secret(layout.admin_password, password)
            new_password = password
        if not layout.api_token.exists():
            token, secret = auth.create_api_token(session, user, "quickstart")
            audit.record(session, actor, "api_token.create", "api_token", token.id)
            write_secret(layout.api_token, secret)
    return new_password


def _enrollment_token(layout: Layout) -> str:
    from e3backup.server.services import audit, enrollment, tenants

    with open_database(layout.server_dir, None) as session:
        tenant = tenants.tenant_by_name(session, TENANT)
        actor = cli_actor(session, tenant.id)
        token, secret = enrollment.create_enrollment_token(
            session, tenant.id, 600.0, 1, actor, "quickstart local agent"
        )
        audit.record(session, actor, "enrollment_token.create", "enrollment_token", token.id)
    return secret


def enroll_agent(layout: Layout, server_url: str) -> bool:
    """Enroll the local agent with a one-use enrollment token unless its config says it is
    enrolled with this server. True if it enrolled now."""
    from e3backup.agent.config import load_config, save_config
    from e3backup.agent.enrollment import enroll

    config = load_config(layout.agent_config)
    if config.enrolled and config.server_url == server_url:
        return False
    enrolled = enroll(config, server_url, token=_enrollment_token(layout))
    enrolled.poll_interval_s = DEMO_POLL_INTERVAL_S
    save_config(enrolled)
    return True


# --- processes ----------------------------------------------------------------------------------


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


def require_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UsageError(
                f"cannot serve on {host}:{port}: {exc.strerror or exc} (another program uses "
                "it?); choose another address with --listen HOST:PORT"
            ) from None


def _e3backup() -> Command:
    """This installation's own console script, also when its venv is not on PATH."""
    beside = Path(sys.executable).with_name("e3backup")
    return Command(str(beside) if beside.exists() else "e3backup")


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_server(layout: Layout, listen: str) -> int:
    """`e3backup server` detached, migrated on start; returns its PID once /healthz answers."""
    url = f"http://{listen}"
    daemon = Daemon(
        _e3backup(),
        ["server", "--listen", listen, "--data-dir", layout.server_dir],
        layout.server_log,
        detach=True,
    )
    daemon.start(lambda: healthy(url), timeout_s=START_TIMEOUT_S)
    assert daemon.pid is not None
    pidfile.write_pid(layout.server_pid, daemon.pid)
    layout.server_url_file.write_text(url + "\n")
    return daemon.pid


def start_agent(layout: Layout) -> int:
    """`e3backup agent run` detached; returns its PID once it is up (not yet necessarily seen
    by the server: the caller waits for that through the API)."""
    daemon = Daemon(
        _e3backup(), ["agent", "run", "--config", layout.agent_config], layout.agent_log, True
    )
    started = time.monotonic()
    daemon.start(lambda: time.monotonic() - started > 0.5, timeout_s=START_TIMEOUT_S)
    failure = daemon.exit_failure(timeout_s=0.5)
    if failure is not None:
        raise CommandFailed(f"the agent did not start: {failure}")
    assert daemon.pid is not None
    pidfile.write_pid(layout.agent_pid, daemon.pid)
    return daemon.pid


def stop_agent(layout: Layout) -> int | None:
    return pidfile.stop_pid(layout.agent_pid, layout.agent_marker)


def stop_all(layout: Layout) -> dict[str, int | None]:
    """Agent first (it reports a running backup as cancelled), then the server."""
    return {
        "agent": stop_agent(layout),
        "server": pidfile.stop_pid(layout.server_pid, layout.server_marker),
    }
