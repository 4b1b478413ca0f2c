"""The hot agent calls (poll, next_run, poll_commands, update_run, push_events) answered in a
plain ASGI layer in front of FastAPI, when they are the common case.

Thousands of agents poll every 5 s; FastAPI's routing, dependency injection, response
validation and the middleware stack cost more CPU than the one indexed statement an idle poll
needs. This layer reads the body, validates it with the route's own pydantic model, checks the
agent against the auth cache and runs the route's Core shortcut (services/agent_polls.py) on an
autocommit connection, in one worker-thread hop. Anything else - a malformed or oversized body,
an unknown or disabled agent, a rate-limited caller, a run to hand out, a pending command, a
status change, a database error - is passed, body replayed, to the FastAPI route, which owns
every rule and every error answer. So answers are the same with or without this layer; only the
common case is cheaper.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from prometheus_client import Histogram
from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from e3backup.server.context import ServerContext
from e3backup.server.schemas.agent import NextRunRequest, PollCommandsRequest, PollRequest
from e3backup.server.schemas.runs import PushEvents, RunUpdate
from e3backup.server.services import agent_polls, events
from e3backup.server.services.agent_gate import AgentRef
from e3backup.server.services.errors import RateLimited, Unauthorized

log = logging.getLogger(__name__)

WORKERS = 8  # a DB round trip each; few, so threads do not fight the event loop for the GIL
NO_CONTENT = object()
Quick = Callable[[ServerContext, Connection, AgentRef, Any], Any]
_JSON_HEADERS = [(b"content-type", b"application/json")]


def _next_run(ctx: ServerContext, conn: Connection, agent: AgentRef, _body: Any) -> Any:
    settings = ctx.settings
    quiet = agent_polls.nothing_to_run(
        conn, agent.id, settings.agent_reclaim_grace_s, settings.agent_watchdog_timeout_s
    )
    return NO_CONTENT if quiet else None


def _poll(ctx: ServerContext, conn: Connection, agent: AgentRef, body: PollRequest | None) -> Any:
    request = body or PollRequest()
    settings = ctx.settings
    return agent_polls.idle_combined_poll(
        conn,
        ctx.gate,
        agent,
        request.run_id,
        request.claim,
        settings.agent_reclaim_grace_s,
        settings.agent_watchdog_timeout_s,
    )


def _poll_commands(ctx: ServerContext, conn: Connection, agent: AgentRef, body: Any) -> Any:
    return agent_polls.idle_poll(conn, agent.id, body.run_id if body else None)


def _update_run(ctx: ServerContext, conn: Connection, agent: AgentRef, body: RunUpdate) -> Any:
    return agent_polls.progress_update(conn, agent.id, body)


def _push_events(ctx: ServerContext, conn: Connection, agent: AgentRef, body: PushEvents) -> Any:
    if not agent_polls.owns_run(conn, agent.id, body.run_id):
        return None
    accepted, duplicates = events.push_events(conn, body.run_id, body.events)
    return {"accepted": accepted, "duplicates": duplicates}


@dataclass(frozen=True)
class Hot:
    model: type[BaseModel]
    optional_body: bool  # the FastAPI route takes `body: Model | None = None`
    quick: Quick
    rechecks_agent: bool = False  # `quick` re-checks status and token in its own statement


HOT_ROUTES = {
    "/api/agent/poll": Hot(PollRequest, True, _poll, rechecks_agent=True),
    "/api/agent/next_run": Hot(NextRunRequest, True, _next_run),
    "/api/agent/poll_commands": Hot(PollCommandsRequest, True, _poll_commands),
    "/api/agent/update_run": Hot(RunUpdate, False, _update_run),
    "/api/agent/push_events": Hot(PushEvents, False, _push_events),
}


class AgentFastPath:
    """ASGI middleware: the common case of HOT_ROUTES, else the wrapped app (see module doc)."""

    def __init__(self, app: ASGIApp, histogram: Histogram, max_body_bytes: int) -> None:
        self.app = app
        self.histogram = histogram
        self.max_body_bytes = max_body_bytes
        self.executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="agent-fast")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = HOT_ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if hot is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        body, messages = await self._read_body(scope, receive)
        answer = None
        if body is not None:
            answer = await self._answer(scope, hot, body)
        if answer is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        status, payload = answer
        await send({"type": "http.response.start", "status": status, "headers": payload[0]})
        await send({"type": "http.response.body", "body": payload[1]})
        self.histogram.labels("POST", scope["path"], str(status)).observe(
            time.perf_counter() - started
        )

    async def _read_body(
        self, scope: Scope, receive: Receive
    ) -> tuple[bytes | None, list[Message]]:
        """The whole body (None when it is too large, or the client left: the app decides),
        and the messages read, to replay."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return None, messages
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return None, messages
            if not message.get("more_body", False):
                return b"".join(m.get("body", b"") for m in messages), messages

    async def _answer(
        self, scope: Scope, hot: Hot, raw: bytes
    ) -> tuple[int, tuple[list[tuple[bytes, bytes]], bytes]] | None:
        try:
            body = None if (hot.optional_body and not raw) else hot.model.model_validate_json(raw)
        except ValidationError:
            return None
        ctx: ServerContext = scope["app"].state.ctx
        agent_id = token = None
        for name, value in scope["headers"]:
            if name == b"x-agent-id":
                agent_id = value.decode("latin-1")
            elif name == b"x-agent-token":
                token = value.decode("latin-1")
        client = scope.get("client")
        ip = client[0] if client else ""
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            self.executor, _serve, ctx, hot, ip, agent_id, token, body
        )
        if result is None:
            return None
        if result is NO_CONTENT:
            return 204, ([], b"")
        if isinstance(result, BaseModel):
            encoded = result.__pydantic_serializer__.to_json(result)
        else:
            encoded = json.dumps(result, separators=(",", ":"), ensure_ascii=False).encode()
        headers = [*_JSON_HEADERS, (b"content-length", str(len(encoded)).encode())]
        return 200, (headers, encoded)


def _serve(
    ctx: ServerContext, hot: Hot, ip: str, agent_id: str | None, token: str | None, body: Any
) -> Any:
    """In a worker thread: the shortcut's answer, or None to take the full route. Failed
    authentication is not counted here: the full route counts it and answers 401/429."""
    try:
        ctx.limiter.check(f"ip:{ip}", f"agent:{(agent_id or '')[:20]}")
        with ctx.autocommit.begin() as conn:
            agent = ctx.gate.authenticate(conn, agent_id, token, ip, hot.rechecks_agent)
            return hot.quick(ctx, conn, agent, body)
    except (Unauthorized, RateLimited):
        return None
    except Exception as exc:  # the full route retries it and answers as it always has
        log.debug("agent fast path declined after %s", type(exc).__name__)
        return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
