"""The agent API client (httpx): one method per endpoint, typed answers, clear errors.

Errors: `ServerUnavailable` (no connection, timeout, 5xx, 429: retry later with backoff),
`ServerRejected` (another 4xx: this request will not succeed as it is), `BadResponse` (an answer
that is not what the contract says). The poll loop logs and skips all three.
"""

from __future__ import annotations

import logging
import platform
import socket
import ssl
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from e3backup import __version__
from e3backup.agent import tls
from e3backup.agent.config import AgentConfig
from e3backup.agent.wire import (
    AgentCommand,
    CombinedPollAnswer,
    EnrollAnswer,
    PollAnswer,
    RunAssignment,
    UpdateAnswer,
)
from e3backup.core.errors import E3Error

log = logging.getLogger(__name__)
TIMEOUT = httpx.Timeout(20.0, connect=5.0)
M = TypeVar("M", bound=BaseModel)


class AgentApiError(E3Error):
    """Talking to the control server failed."""


class ServerUnavailable(AgentApiError):
    retryable = True


class ServerRejected(AgentApiError):
    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class BadResponse(AgentApiError):
    pass


def host_identity() -> dict[str, str]:
    return {
        "hostname": socket.gethostname(),
        "os": platform.system().lower(),
        "arch": platform.machine(),
        "version": __version__,
    }


def _verify(config: AgentConfig) -> ssl.SSLContext | bool:
    if config.server_url.startswith("https://"):
        if not config.server_cert_pem:
            raise AgentApiError(
                "no pinned server certificate in the agent config: enroll again over https"
            )
        return tls.pinned_context(config.server_cert_pem, config.server_cert_sha256)
    return True


class AgentClient:
    def __init__(self, config: AgentConfig, timeout: httpx.Timeout = TIMEOUT) -> None:
        tls.server_address(config.server_url)
        headers = {"User-Agent": f"e3backup-agent/{__version__}"}
        if config.enrolled:
            headers["X-Agent-ID"] = str(config.agent_id)
            headers["X-Agent-Token"] = config.agent_token
        self._http = httpx.Client(
            base_url=config.server_url.rstrip("/"),
            headers=headers,
            timeout=timeout,
            verify=_verify(config),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- transport ------------------------------------------------------------------------------

    def post(self, endpoint: str, body: dict[str, Any] | None = None) -> httpx.Response:
        path = f"/api/agent/{endpoint}"
        try:
            response = self._http.post(path, json=body or {})
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"control server unreachable ({endpoint}): {exc}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise ServerUnavailable(f"control server answered {response.status_code} ({endpoint})")
        if response.status_code >= 400:
            raise ServerRejected(
                f"{endpoint}: {response.status_code} {_detail(response)}", response.status_code
            )
        return response

    def _typed(self, model: type[M], response: httpx.Response, endpoint: str) -> M:
        try:
            return model.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise BadResponse(
                f"{endpoint}: malformed answer from the server: {_short(exc)}"
            ) from None

    # --- endpoints ------------------------------------------------------------------------------

    def enroll(self, credentials: dict[str, str]) -> EnrollAnswer:
        response = self.post("enroll", {**credentials, **host_identity()})
        return self._typed(EnrollAnswer, response, "enroll")

    def next_run(self) -> RunAssignment | None:
        response = self.post("next_run")
        if response.status_code == 204 or not response.content:
            return None
        return self._typed(RunAssignment, response, "next_run")

    def update_run(self, run_id: int, **fields: Any) -> UpdateAnswer:
        body = {"run_id": run_id, **{k: v for k, v in fields.items() if v is not None}}
        return self._typed(UpdateAnswer, self.post("update_run", body), "update_run")

    def push_events(self, run_id: int, events: list[dict[str, Any]]) -> None:
        self.post("push_events", {"run_id": run_id, "events": events})

    def push_logs(self, run_id: int, lines: list[dict[str, Any]]) -> None:
        self.post("push_logs", {"run_id": run_id, "lines": lines})

    def poll_commands(self, run_id: int | None = None) -> tuple[list[AgentCommand], bool]:
        """Pending commands (each validated alone: a bad one is logged and skipped) and whether
        `run_id` has a cancel request."""
        body = {"run_id": run_id} if run_id is not None else {}
        answer = self._typed(PollAnswer, self.post("poll_commands", body), "poll_commands")
        return _commands(answer), answer.cancel_requested

    def poll(
        self, run_id: int | None, claim: bool
    ) -> tuple[RunAssignment | None, list[AgentCommand]]:
        """The combined poll: next_run's run (when `claim`; a malformed one is logged and
        skipped) and poll_commands' commands, in one request. A server without it answers 404
        (`ServerRejected`); the caller then uses next_run + poll_commands."""
        body = {"run_id": run_id, "claim": claim}
        answer = self._typed(CombinedPollAnswer, self.post("poll", body), "poll")
        run = None
        if answer.run is not None:
            try:
                run = RunAssignment.model_validate(answer.run)
            except ValidationError as exc:
                log.warning("skipping a bad run assignment: poll: %s", _short(exc))
        return run, _commands(answer)

    def complete_command(
        self, command_id: int, status: str, result: Any = None, error: str | None = None
    ) -> None:
        body = {"command_id": command_id, "status": status, "result": result, "error": error}
        self.post("complete_command", body)

    def report_vms(self, vms: list[dict[str, Any]], command_id: int | None = None) -> None:
        self.post("report_vms", {"vms": vms, "command_id": command_id})

    def report_volumes(self, volumes: list[dict[str, Any]]) -> None:
        self.post("report_volumes", {"volumes": volumes})

    def report_browse(self, command_id: int, listing: dict[str, Any]) -> None:
        self.post("report_browse", {"command_id": command_id, **listing})


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", "")
    except (ValueError, AttributeError):
        detail = response.text[:200]
    return str(detail)[:300]


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def _commands(answer: PollAnswer) -> list[AgentCommand]:
    out = []
    for raw in answer.commands:
        try:
            out.append(AgentCommand.model_validate(raw))
        except ValidationError as exc:
            log.warning("skipping a malformed command from the server: %s", _short(exc))
    return out
