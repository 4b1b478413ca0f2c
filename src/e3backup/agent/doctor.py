"""`e3backup agent status` checks (Barman's CheckStrategy habit: every check named, each with
ok / failed and a hint): enrolled, server reachable, last run, qemu-img present, QMP sockets
readable, repository reachable (the last run's destination)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from e3backup.agent import preflight
from e3backup.agent.client import AgentApiError, AgentClient
from e3backup.agent.config import AgentConfig
from e3backup.agent.destination import AWS_ENDPOINT
from e3backup.agent.inventory import qemu_endpoints, volumes
from e3backup.agent.state import RunLedger
from e3backup.exec.command import Command


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "required": self.required}


def run_checks(config: AgentConfig) -> list[Check]:
    checks = [
        Check(
            "enrolled",
            config.enrolled,
            f"agent {config.agent_id} at {config.server_url}"
            if config.enrolled
            else f"not enrolled ({config.path}): run 'e3backup agent enroll'",
        )
    ]
    if config.enrolled:
        checks.append(_server(config))
    last = RunLedger(config.state_path).last_run
    checks.append(Check("last run", True, _describe_last(last), required=False))
    checks.append(_repository(last))
    checks.append(_tool("qemu-img"))
    checks.extend(_qmp(config))
    return checks


def _server(config: AgentConfig) -> Check:
    try:
        with AgentClient(config) as client:  # report_volumes: authenticated, no side effects
            client.report_volumes(volumes())
        return Check("server reachable", True, f"{config.server_url} accepted the agent")
    except AgentApiError as exc:
        return Check("server reachable", False, str(exc))


def _describe_last(last: dict[str, Any] | None) -> str:
    if not last:
        return "no run yet"
    error = f": {last['error']}" if last.get("error") else ""
    return f"run {last.get('run_id')} {last.get('status')}{error}"


def _tool(name: str) -> Check:
    command = Command(name)
    ok = command.available()
    return Check(
        f"{name} present",
        ok,
        command.path
        if ok
        else f"{name} not on PATH (needed for qcow2/VMDK images and VM restores)",
        required=False,
    )


def _qmp(config: AgentConfig) -> list[Check]:
    qemu = {"qmp_glob": config.qemu.qmp_glob, "qga_name": config.qemu.qga_name}
    if not config.qemu.qmp_glob:
        return [
            Check(
                "QMP sockets readable", True, "qemu.qmp_glob not set (no kvm jobs)", required=False
            )
        ]
    endpoints = qemu_endpoints(qemu)
    if not endpoints:
        return [
            Check(
                "QMP sockets readable",
                False,
                f"qemu.qmp_glob {config.qemu.qmp_glob!r} matches no socket",
                False,
            )
        ]
    bad = [str(e.qmp) for e in endpoints if not os.access(e.qmp, os.R_OK | os.W_OK)]
    return [
        Check(
            "QMP sockets readable",
            not bad,
            f"{len(endpoints)} socket(s)" + (f"; not accessible: {', '.join(bad)}" if bad else ""),
            False,
        )
    ]


def _repository(last: dict[str, Any] | None) -> Check:
    dest = (last or {}).get("destination") or {}
    if not dest:
        return Check("repository reachable", True, "no run yet: nothing to check", False)
    if dest.get("kind") == "s3":
        endpoint = preflight.normalize_endpoint(dest.get("endpoint") or "") or AWS_ENDPOINT
        probe = preflight.probe(endpoint)
        return Check(
            "repository reachable",
            probe.ok,
            f"{endpoint}: " + ("reachable" if probe.ok else probe.error),
        )
    path = str(dest.get("location") or "")
    ok = os.path.exists(os.path.join(path, "config"))
    return Check(
        "repository reachable",
        ok,
        f"{path}: " + ("repository found" if ok else "no repository there"),
    )
