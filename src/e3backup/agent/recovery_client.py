"""The rescue environment's client for the server's recovery endpoints (seed 003 recovery
sessions): `Authorization: Bearer <session token>`, the server certificate pinned on first
contact or to `--fingerprint` (as enroll does), plain http only to a loopback address.

Errors carry the exit codes `agent recover` documents: `ServerUnreachable` (40: no connection,
timeout, 5xx, 429, a malformed answer) and `SessionRejected` (41: the token is invalid, expired
or revoked, or its run can no longer be restored from here). A rejection is never retried: a
wrong token must not hammer the server's failed-login limiter.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, Field, ValidationError

from e3backup import __version__
from e3backup.agent import tls
from e3backup.agent.wire import JobContext, UpdateAnswer, Wire
from e3backup.core.errors import E3Error

log = logging.getLogger(__name__)
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
M = TypeVar("M", bound=BaseModel)


class ServerUnreachable(E3Error):
    exit_code = 40
    retryable = True


class SessionRejected(E3Error):
    exit_code = 41


class RecoveryContext(Wire):
    """The server's `restore_context` answer; `job` holds the repository's secrets."""

    run_id: int
    session_expires_at: str
    status: str
    cancel_requested: bool = False
    backup_point_id: int
    snapshot_id: str
    backup_type: str = ""
    source: str = ""
    disk_filter: list[str] = Field(default_factory=list)
    format: str = "raw"
    job: JobContext = Field(repr=False)


class SessionState(Wire):
    run_id: int
    session_expires_at: str


class RecoveryClient:
    def __init__(
        self,
        server_url: str,
        session_token: str,
        fingerprint: str | None = None,
        timeout: httpx.Timeout = TIMEOUT,
    ) -> None:
        scheme, host, port = tls.server_address(server_url)
        if not session_token.strip():
            raise SessionRejected("the recovery session token is empty")
        self.server_url = server_url.rstrip("/")
        self.fingerprint = ""
        verify: Any = True
        if scheme == "https":
            try:
                pem, self.fingerprint = tls.first_contact(host, port, fingerprint)
            except tls.CertificateUnavailable as exc:
                raise ServerUnreachable(f"control server unreachable: {exc}") from None
            verify = tls.pinned_context(pem, self.fingerprint)
        self._http = httpx.Client(
            base_url=self.server_url,
            headers={
                "User-Agent": f"e3backup-recover/{__version__}",
                "Authorization": f"Bearer {session_token.strip()}",
            },
            timeout=timeout,
            verify=verify,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RecoveryClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _call(self, method: str, route: str, model: type[M], body: Any = None) -> M:
        try:
            response = self._http.request(method, f"/api/recovery/{route}", json=body)
        except httpx.TransportError as exc:
            raise ServerUnreachable(
                f"control server {self.server_url} unreachable ({route}): {exc}"
            ) from None
        name = route.split("/")[-1]
        if response.status_code >= 500 or response.status_code == 429:
            raise ServerUnreachable(f"control server answered {response.status_code} ({name})")
        if response.status_code in (401, 403):
            raise SessionRejected(f"recovery session rejected: {_detail(response)}")
        if response.status_code in (404, 409):
            raise SessionRejected(f"{name}: {_detail(response)}")
        if response.status_code >= 400:
            raise E3Error(f"{name}: {response.status_code} {_detail(response)}")
        try:
            return model.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            first = str(exc).splitlines()[0][:200]
            raise ServerUnreachable(f"{name}: malformed answer from the server: {first}") from None

    def restore_context(self) -> RecoveryContext:
        return self._call("POST", "restore_context", RecoveryContext, {})

    def update_run(self, run_id: int, **fields: Any) -> UpdateAnswer:
        body = {"run_id": run_id, **{k: v for k, v in fields.items() if v is not None}}
        return self._call("POST", "update_run", UpdateAnswer, body)

    def push_events(self, run_id: int, events: list[dict[str, Any]]) -> None:
        self._call("POST", "push_events", Wire, {"run_id": run_id, "events": events})

    def refresh_session(self, run_id: int) -> str:
        state = self._call("POST", "refresh_session", SessionState, {"run_id": run_id})
        return state.session_expires_at


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", "")
    except (ValueError, AttributeError):
        detail = response.text[:200]
    return str(detail)[:300] or f"HTTP {response.status_code}"
