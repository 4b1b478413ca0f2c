"""Sign-in, sign-out and the MSP tenant switcher (the client API's session services)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from e3backup.server.deps import SESSION_COOKIE, Ctx, Db, client_ip, set_session_cookie
from e3backup.server.services import auth
from e3backup.server.services.errors import RateLimited, Unauthorized
from e3backup.server.web.view import (
    CSRF_COOKIE,
    PageView,
    add_flash,
    render_page,
    safe_next,
    set_csrf_cookie,
)

router = APIRouter(include_in_schema=False)
WRONG_PASSWORD = "Wrong email or password."


def _login_page(
    request: Request, email: str = "", error: str = "", next_url: str = "/", status: int = 200
) -> Response:
    return render_page(
        request, "login.html", status, email=email, error=error, next=safe_next(next_url)
    )


@router.get("/login")
def login_form(request: Request, next: str = "/") -> Response:
    return _login_page(request, next_url=next)


@router.post("/login")
def login(
    request: Request,
    ctx: Ctx,
    db: Db,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    try:
        _user, session = auth.sign_in(
            db, ctx.limiter, client_ip(request), email, password, ctx.settings.session_ttl_s
        )
    except RateLimited as exc:
        return _login_page(request, email, f"{exc}.", next, status=429)
    except Unauthorized:
        return _login_page(request, email, WRONG_PASSWORD, next)
    response = RedirectResponse(safe_next(next), status_code=303)
    set_session_cookie(response, ctx, session)
    set_csrf_cookie(response, ctx, session.csrf_token, int(session.expires_in_s))
    return response


@router.post("/logout")
def logout(page: PageView) -> Response:
    cookie = page.request.cookies.get(SESSION_COOKIE)
    if cookie:
        auth.end_session(page.db, cookie)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    add_flash(response, page.request, "You are signed out.", "info")
    return response


@router.post("/tenant")
def switch_tenant(page: PageView, tenant_id: Annotated[int, Form()]) -> Response:
    cookie = page.request.cookies.get(SESSION_COOKIE, "")
    auth.switch_tenant(page.db, page.actor, cookie, tenant_id)
    back = urlsplit(page.request.headers.get("referer", "")).path
    return page.redirect(safe_next(back), "Switched tenant.", "info")
