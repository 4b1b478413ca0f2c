"""Sign-in for the UI (session cookie + CSRF token), the caller's identity, tenant switch, and
enrollment tokens."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from e3backup.server.deps import (
    SESSION_COOKIE,
    Ctx,
    CurrentActor,
    Db,
    client_ip,
    set_session_cookie,
)
from e3backup.server.schemas.agent import Ok
from e3backup.server.schemas.client import (
    EnrollmentTokenCreate,
    EnrollmentTokenOut,
    LoginAnswer,
    LoginRequest,
    MeOut,
    TenantSwitch,
)
from e3backup.server.services import auth, enrollment
from e3backup.server.services.auth import Actor
from e3backup.server.services.errors import Unauthorized

router = APIRouter(prefix="/api/v1", tags=["auth"])


def _me(actor: Actor) -> MeOut:
    return MeOut(
        user_id=actor.user_id,
        email=actor.label,
        role=actor.role,
        tenant_id=actor.tenant_id,
        tenant_ids=sorted(actor.tenant_ids),
    )


@router.post("/auth/login", response_model=LoginAnswer)
def login(
    body: LoginRequest, request: Request, response: Response, ctx: Ctx, db: Db
) -> LoginAnswer:
    user, session = auth.sign_in(
        db, ctx.limiter, client_ip(request), body.email, body.password, ctx.settings.session_ttl_s
    )
    set_session_cookie(response, ctx, session)
    me = _me(auth.actor_for_user(db, user, "user"))
    return LoginAnswer(
        **me.model_dump(), csrf_token=session.csrf_token, expires_in_s=session.expires_in_s
    )


@router.post("/auth/logout", response_model=Ok)
def logout(request: Request, response: Response, actor: CurrentActor, db: Db) -> Ok:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        auth.end_session(db, cookie)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return Ok()


@router.get("/me", response_model=MeOut)
def me(actor: CurrentActor) -> MeOut:
    return _me(actor)


@router.post("/auth/tenant", response_model=MeOut)
def switch_tenant(body: TenantSwitch, request: Request, actor: CurrentActor, db: Db) -> MeOut:
    cookie = request.cookies.get(SESSION_COOKIE)
    if actor.kind != "user" or not cookie:
        raise Unauthorized("switching tenant needs a signed-in session")
    auth.switch_tenant(db, actor, cookie, body.tenant_id)
    return _me(auth.actor_from_session(db, cookie, None, unsafe_method=False))


@router.post("/enrollment_tokens", response_model=EnrollmentTokenOut, status_code=201)
def create_enrollment_token(
    body: EnrollmentTokenCreate, actor: CurrentActor, db: Db
) -> EnrollmentTokenOut:
    token, secret = enrollment.issue_token(
        db, actor, body.tenant_id, body.expires_in_s, body.max_uses, body.description
    )
    return EnrollmentTokenOut(
        id=token.id,
        tenant_id=token.tenant_id,
        token=secret,
        expires_at=token.expires_at,
        max_uses=token.max_uses,
    )
