"""Enrollment (seed tray flow without the tray): by an enrollment token or a user's email and
password; the server certificate is pinned on first contact (https; or only the certificate
whose fingerprint the operator gives), and the config written
with the agent's id and token (mode 0600)."""

from __future__ import annotations

import logging
from dataclasses import replace

from e3backup.agent import tls
from e3backup.agent.client import AgentClient
from e3backup.agent.config import AgentConfig

log = logging.getLogger(__name__)


def enroll(
    config: AgentConfig,
    server_url: str,
    token: str | None = None,
    email: str | None = None,
    password: str | None = None,
    expected_fingerprint: str | None = None,
) -> AgentConfig:
    """Enroll with the server and return the config to save (the caller saves it)."""
    scheme, host, port = tls.server_address(server_url)
    fresh = replace(
        config,
        server_url=server_url.rstrip("/"),
        agent_id=None,
        agent_token="",
        server_cert_pem="",
        server_cert_sha256="",
    )
    if scheme == "https":
        fresh.server_cert_pem, fresh.server_cert_sha256 = tls.first_contact(
            host, port, expected_fingerprint
        )
    credentials = (
        {"enrollment_token": token} if token else {"email": email or "", "password": password or ""}
    )
    with AgentClient(fresh) as client:
        answer = client.enroll(credentials)
    fresh.agent_id = answer.agent_id
    fresh.agent_token = answer.agent_token
    fresh.tenant_id = answer.tenant_id
    fresh.poll_interval_s = answer.poll_interval_s or fresh.poll_interval_s
    return fresh
