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

[hyperv]                                # Windows hosts (every key optional)
state_dir = 'D:\\E3Backup\\hyperv'    # RCT records; default %PROGRAMDATA%\\E3Backup\\hyperv
powershell = "pwsh"                     # default: powershell.exe, else pwsh
job_timeout_s = 1800.0                  # one Hyper-V WMI job (snapshot, conversion)
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
DEFAULT_HYPERV_JOB_TIMEOUT_S = 1800.0


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
class HypervSettings:
    state_dir: str = ""  # default: %PROGRAMDATA%\E3Backup\hyperv
    powershell: str = ""  # default: powershell.exe if present, else pwsh
    job_timeout_s: float = DEFAULT_HYPERV_JOB_TIMEOUT_S

    def check(self) -> None:
        self.job_timeout_s = float(self.job_timeout_s)
        if self.job_timeout_s <= 0:
            raise ValueError("hyperv.job_timeout_s must be positive")
        if not isinstance(self.state_dir, str) or not isinstance(self.powershell, str):
            raise ValueError("hyperv.state_dir and hyperv.powershell must be strings")


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
    hyperv: HypervSettings = field(default_factory=HypervSettings)
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
    sections = {name: doc.pop(name, {}) or {} for name in ("qemu", "hyperv")}
    known = set(AgentConfig.__dataclass_fields__) - {"qemu", "hyperv", "path"}
    unknown = sorted(set(doc) - known)
    for name, kind in (("qemu", QemuSettings), ("hyperv", HypervSettings)):
        if not isinstance(sections[name], dict):
            raise UsageError(f"bad agent config {path}: [{name}] must be a table")
        unknown += sorted(
            f"{name}.{k}" for k in set(sections[name]) - set(kind.__dataclass_fields__)
        )
    if unknown:
        raise UsageError(f"unknown setting(s) in {path}: {', '.join(unknown)}")
    try:
        qemu, hyperv = QemuSettings(**sections["qemu"]), HypervSettings(**sections["hyperv"])
        config = AgentConfig(**doc, qemu=qemu, hyperv=hyperv, path=path)
        config.poll_interval_s = float(config.poll_interval_s)
        hyperv.check()
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
