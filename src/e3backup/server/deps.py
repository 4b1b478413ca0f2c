"""FastAPI dependencies: the request's database session, the calling agent or user.

Sessions commit when the handler returns, before the response is sent (scope="function"), so
a client never sees success for something that was not stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from e3backup.server.context import ServerContext
from e3backup.server.db.models import Agent
from e3backup.server.services import agents
from e3backup.server.services.auth import Actor, actor_from_api_token, actor_from_session
from e3backup.server.services.errors import RateLimited, Unauthorized

SESSION_COOKIE = "e3_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_ctx(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ServerContext, Depends(get_ctx)]


def get_db(ctx: Ctx) -> Iterator[Session]:
    session = ctx.sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


Db = Annotated[Session, Depends(get_db, scope="function")]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def current_agent(
    request: Request,
    ctx: Ctx,
    db: Db,
    agent_id: Annotated[str | None, Header(alias="X-Agent-ID")] = None,
    agent_token: Annotated[str | None, Header(alias="X-Agent-Token")] = None,
) -> Agent:
    ip = client_ip(request)
    keys = (f"ip:{ip}", f"agent:{(agent_id or '')[:20]}")
    ctx.limiter.check(*keys)
    try:
        return agents.authenticate_agent(db, agent_id, agent_token, ip)
    except Unauthorized:
        ctx.limiter.failed(*keys)
        raise


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
