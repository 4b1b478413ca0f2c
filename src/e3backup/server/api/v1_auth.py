"""Sign-in for the UI (session cookie + CSRF token), the caller's identity, tenant switch, and
enrollment tokens."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from e3backup.server.deps import SESSION_COOKIE, Ctx, CurrentActor, Db, client_ip
from e3backup.server.schemas.agent import Ok
from e3backup.server.schemas.client import (
    EnrollmentTokenCreate,
    EnrollmentTokenOut,
    LoginAnswer,
    LoginRequest,
    MeOut,
    TenantSwitch,
)
from e3backup.server.services import audit, auth, enrollment, users
from e3backup.server.services.auth import Actor
from e3backup.server.services.errors import NotFound, Unauthorized

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
    key = f"login:{client_ip(request)}"
    ctx.limiter.check(key, f"login:{body.email.lower()[:320]}")
    try:
        user = users.authenticate(db, body.email, body.password)
    except Unauthorized:
        ctx.limiter.failed(key, f"login:{body.email.lower()[:320]}")
        raise
    session = auth.create_session(db, user, ctx.settings.session_ttl_s)
    response.set_cookie(
        SESSION_COOKIE,
        session.session_token,
        max_age=int(session.expires_in_s),
        httponly=True,
        samesite="strict",
        secure=ctx.settings.session_cookie_secure or ctx.settings.tls_cert is not None,
        path="/",
    )
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
    actor.require("admin")
    tenant_id = body.tenant_id if body.tenant_id is not None else actor.tenant_id
    if not actor.sees(tenant_id):
        raise NotFound("tenant not found")
    token, secret = enrollment.create_enrollment_token(
        db, tenant_id, body.expires_in_s, body.max_uses, actor, body.description
    )
    audit.record(db, actor, "enrollment_token.create", "enrollment_token", token.id, tenant_id)
    return EnrollmentTokenOut(
        id=token.id,
        tenant_id=tenant_id,
        token=secret,
        expires_at=token.expires_at,
        max_uses=token.max_uses,
    )
