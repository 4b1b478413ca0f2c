"""The agent's configuration file (TOML, mode 0600: it holds the agent token).

Default location: `/etc/e3backup/agent.toml` as root, `$XDG_CONFIG_HOME/e3backup/agent.toml`
otherwise, `%PROGRAMDATA%\\E3Backup\\agent.toml` on Windows. Every agent command takes
`--config PATH`. The state directory (started runs, the event outbox) sits beside it.

```toml
server_url = "https://backup.example.com:8420"
agent_id = 12
agent_token = "..."
poll_interval_s = 5.0
server_cert_sha256 = "ab12..."   # pinned at enrollment (https only)
server_cert_pem = "-----BEGIN CERTIFICATE-----..."

[qemu]
qmp_glob = "/run/e3backup/vms/*.qmp"   # one QMP socket per VM
qga_name = "{stem}.qga"                 # its guest-agent socket, beside it
```
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from e3backup.core.errors import UsageError

CONFIG_NAME = "agent.toml"
DEFAULT_POLL_INTERVAL_S = 5.0


def default_config_path() -> Path:
    if sys.platform == "win32":
        base = Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "E3Backup"
    elif hasattr(os, "geteuid") and os.geteuid() == 0:
        base = Path("/etc/e3backup")
    else:
        xdg = os.environ.get("XDG_CONFIG_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".config") / "e3backup"
    return base / CONFIG_NAME


@dataclass
class QemuSettings:
    qmp_glob: str = ""
    qga_name: str = "{stem}.qga"  # {stem}: the QMP socket's name without its suffix
    scratch_dir: str = ""


@dataclass
class AgentConfig:
    server_url: str = ""
    agent_id: int | None = None
    agent_token: str = ""
    tenant_id: int | None = None
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    server_cert_sha256: str = ""
    server_cert_pem: str = ""
    state_dir: str = ""  # default: <config dir>/state
    qemu: QemuSettings = field(default_factory=QemuSettings)
    path: Path = field(default_factory=default_config_path, compare=False)

    @property
    def enrolled(self) -> bool:
        return self.agent_id is not None and bool(self.agent_token)

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir) if self.state_dir else self.path.parent / "state"

    def require_enrolled(self) -> None:
        if not self.enrolled:
            raise UsageError(
                f"this agent is not enrolled ({self.path}): run 'e3backup agent enroll' first"
            )

    def to_toml(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("path")
        return {k: v for k, v in doc.items() if v is not None and v != ""}


def load_config(path: Path | None = None) -> AgentConfig:
    """The config at `path` (or the default place); an absent file is an unenrolled agent."""
    path = path or default_config_path()
    if not path.exists():
        return AgentConfig(path=path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the agent config {path}: {exc}") from None
    qemu = doc.pop("qemu", {}) or {}
    known = set(AgentConfig.__dataclass_fields__) - {"qemu", "path"}
    unknown = sorted(set(doc) - known) + sorted(
        f"qemu.{k}" for k in set(qemu) - set(QemuSettings.__dataclass_fields__)
    )
    if unknown:
        raise UsageError(f"unknown setting(s) in {path}: {', '.join(unknown)}")
    try:
        config = AgentConfig(**doc, qemu=QemuSettings(**qemu), path=path)
        config.poll_interval_s = float(config.poll_interval_s)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad agent config {path}: {exc}") from None
    if config.poll_interval_s <= 0:
        raise UsageError(f"bad agent config {path}: poll_interval_s must be positive")
    return config


def save_config(config: AgentConfig) -> None:
    """Write atomically with mode 0600 (the file holds the agent token)."""
    path = config.path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        tomli_w.dump(config.to_toml(), out)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
