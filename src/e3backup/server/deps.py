"""FastAPI dependencies: the request's database session, the calling agent or user.

Sessions commit when the handler returns, before the response is sent (scope="function"), so
a client never sees success for something that was not stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request, Response
from sqlalchemy import Connection
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from e3backup.server.context import ServerContext
from e3backup.server.db.engine import session_scope
from e3backup.server.db.models import Agent
from e3backup.server.services.agent_gate import AgentRef
from e3backup.server.services.auth import (
    Actor,
    NewSession,
    actor_from_api_token,
    actor_from_session,
)
from e3backup.server.services.errors import RateLimited, Unauthorized

SESSION_COOKIE = "e3_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
T = TypeVar("T")


async def get_ctx(request: Request) -> ServerContext:  # no I/O: no threadpool hop
    ctx: ServerContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ServerContext, Depends(get_ctx)]


def get_db(ctx: Ctx) -> Iterator[Session]:
    with session_scope(ctx.sessions) as session:
        yield session


Db = Annotated[Session, Depends(get_db, scope="function")]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def set_session_cookie(response: Response, ctx: ServerContext, session: NewSession) -> None:
    """The session cookie of the API's login and the UI's sign-in (one definition)."""
    response.set_cookie(
        SESSION_COOKIE,
        session.session_token,
        max_age=int(session.expires_in_s),
        httponly=True,
        samesite="strict",
        secure=cookie_secure(ctx),
        path="/",
    )


def cookie_secure(ctx: ServerContext) -> bool:
    return ctx.settings.session_cookie_secure or ctx.settings.tls_cert is not None


def authenticate_agent(
    ctx: ServerContext, conn: Connection, ip: str, agent_id: str | None, agent_token: str | None
) -> AgentRef:
    keys = (f"ip:{ip}", f"agent:{(agent_id or '')[:20]}")
    ctx.limiter.check(*keys)
    try:
        return ctx.gate.authenticate(conn, agent_id, agent_token, ip)
    except Unauthorized:
        ctx.limiter.failed(*keys)
        raise


AgentIdHeader = Annotated[str | None, Header(alias="X-Agent-ID")]
AgentTokenHeader = Annotated[str | None, Header(alias="X-Agent-Token")]


def current_agent(
    request: Request,
    ctx: Ctx,
    db: Db,
    agent_id: AgentIdHeader = None,
    agent_token: AgentTokenHeader = None,
) -> Agent:
    ref = authenticate_agent(ctx, db.connection(), client_ip(request), agent_id, agent_token)
    return agent_row(db, ref)


def agent_row(db: Session, ref: AgentRef) -> Agent:
    """The ORM row of an authenticated agent (gone if it was deleted a moment ago)."""
    agent = db.get(Agent, ref.id)
    if agent is None:
        raise Unauthorized("unknown agent or wrong agent token")
    return agent


Quick = Callable[[Connection, AgentRef], T | None]
Full = Callable[[Session, Agent], T]


@dataclass(frozen=True)
class AgentCall:
    """The hot agent routes (polls, progress) in ONE threadpool hop and, in the common case,
    without an ORM session: authentication (cached, services/agent_gate.py) and a Core
    shortcut (services/agent_polls.py) on one connection; only when the shortcut declines
    does the full service path run in a session with the agent's ORM row."""

    ctx: ServerContext
    ip: str
    agent_id: str | None
    agent_token: str | None

    async def run(self, full: Full[T], quick: Quick[T] | None = None) -> T:
        return await run_in_threadpool(self._run, full, quick)

    def _run(self, full: Full[T], quick: Quick[T] | None) -> T:
        with self.ctx.engine.begin() as conn:
            ref = authenticate_agent(self.ctx, conn, self.ip, self.agent_id, self.agent_token)
            answer = quick(conn, ref) if quick is not None else None
        if answer is not None:
            return answer
        with session_scope(self.ctx.sessions) as db:
            return full(db, agent_row(db, ref))


async def agent_call(
    request: Request, agent_id: AgentIdHeader = None, agent_token: AgentTokenHeader = None
) -> AgentCall:
    return AgentCall(request.app.state.ctx, client_ip(request), agent_id, agent_token)


AgentCallDep = Annotated[AgentCall, Depends(agent_call)]
CurrentAgent = Annotated[Agent, Depends(current_agent)]


def current_actor(request: Request, ctx: Ctx, db: Db) -> Actor:
    ip_key = f"ip:{client_ip(request)}"
    ctx.limiter.check(ip_key)
    try:
        authorization = request.headers.get("Authorization", "")
        if authorization:
            scheme, _, secret = authorization.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                raise Unauthorized("Authorization must be 'Bearer <API token>'")
            return actor_from_api_token(db, secret.strip())
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            raise Unauthorized("sign in or send an API token (Authorization: Bearer ...)")
        return actor_from_session(
            db, cookie, request.headers.get(CSRF_HEADER), request.method not in SAFE_METHODS
        )
    except Unauthorized:
        ctx.limiter.failed(ip_key)
        raise
    except RateLimited:
        raise


CurrentActor = Annotated[Actor, Depends(current_actor)]
