"""The signed-in page's view of a request: who (an `Actor` from the session cookie), the CSRF
token its forms carry, and how to answer (render a template, redirect with a flash message).

The session is the client API's (services/auth: same cookie, same CSRF check); the UI keeps
the CSRF token of its sign-in in a second HttpOnly cookie so every rendered page can embed it.
A form sends it as the `csrf_token` field, htmx as the X-CSRF-Token header (static/js/app.js).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, unquote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from e3backup.server.context import ServerContext
from e3backup.server.deps import (
    CSRF_HEADER,
    SAFE_METHODS,
    SESSION_COOKIE,
    Ctx,
    Db,
    cookie_secure,
)
from e3backup.server.services import auth, tenants
from e3backup.server.services.auth import Actor
from e3backup.server.services.errors import Unauthorized
from e3backup.server.web.nav import nav_for
from e3backup.server.web.templating import templates

CSRF_COOKIE = "e3_csrf"
FLASH_COOKIE = "e3_flash"
CSRF_FIELD = "csrf_token"
SECURITY_HEADERS = {
    # no inline scripts anywhere: page JavaScript lives in static/js (Alpine/htmx need eval)
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; object-src 'none'; base-uri 'self'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class SignInRequired(Unauthorized):
    """No valid UI session: pages answer with a redirect to /login (web/errors.py)."""


def _flashes(request: Request) -> list[tuple[str, str]]:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return []
    try:
        items = json.loads(unquote(raw))
        return [(str(level), str(text)) for level, text in items][:5]
    except (ValueError, TypeError):
        return []


def add_flash(response: Response, request: Request, text: str, level: str = "success") -> None:
    """Show `text` on the next page rendered (levels: success, info, warning, error)."""
    items = [*_flashes(request), (level, text)]
    response.set_cookie(
        FLASH_COOKIE, quote(json.dumps(items)), httponly=True, samesite="strict", path="/"
    )


def safe_next(url: str | None, default: str = "/") -> str:
    """A same-site path to go back to (never another host: no open redirect)."""
    if not url:
        return default
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or url.startswith("//"):
        return default
    return parts.path + (f"?{parts.query}" if parts.query else "")


def render_page(
    request: Request, template: str, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """Any page, signed in or not (sign-in, errors): the template with the security headers;
    pending flash messages are shown and cleared."""
    context.setdefault("flashes", _flashes(request))
    context.setdefault("actor", None)
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    if request.cookies.get(FLASH_COOKIE):
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


@dataclass
class View:
    """What a page handler gets (`page: PageView`): the signed-in actor, the database session
    of the request, the server context, and helpers to answer."""

    request: Request
    actor: Actor
    db: Session
    ctx: ServerContext
    csrf_token: str

    def can(self, role: str) -> bool:
        """For templates hiding controls; the services still enforce (`actor.require`)."""
        return self.actor.allows(role)

    def render(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        switchable = tenants.switchable_tenants(self.db, self.actor.user_id)
        return render_page(
            self.request,
            template,
            status_code,
            view=self,
            actor=self.actor,
            csrf_token=self.csrf_token,
            tenants=switchable if len(switchable) > 1 else [],
            nav=nav_for(self.request, self.actor),
            **context,
        )

    def redirect(self, url: str, flash: str | None = None, level: str = "success") -> Response:
        """303 See Other (a POST's answer), optionally with a flash message."""
        response = RedirectResponse(url, status_code=303)
        if flash:
            add_flash(response, self.request, flash, level)
        return response

    @property
    def server_url(self) -> str:
        return str(self.request.base_url).rstrip("/")


async def _csrf_sent(request: Request) -> str | None:
    """The CSRF token of an unsafe request: header (htmx, fetch) or form field (plain forms)."""
    if request.method in SAFE_METHODS:
        return None
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


def page_view(
    request: Request,
    ctx: Ctx,
    db: Db,
    csrf_sent: Annotated[str | None, Depends(_csrf_sent)],
) -> View:
    cookie = request.cookies.get(SESSION_COOKIE)
    csrf_token = request.cookies.get(CSRF_COOKIE)
    if not cookie or not csrf_token:
        raise SignInRequired("sign in to continue")
    unsafe = request.method not in SAFE_METHODS
    try:
        actor = auth.actor_from_session(db, cookie, csrf_sent, unsafe)
    except Unauthorized as exc:
        raise SignInRequired(str(exc)) from None
    return View(request, actor, db, ctx, csrf_token)


PageView = Annotated[View, Depends(page_view)]


def set_csrf_cookie(response: Response, ctx: ServerContext, csrf_token: str, max_age: int) -> None:
    response.set_cookie(
        CSRF_COOKIE,
        csrf_token,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=cookie_secure(ctx),
        path="/",
    )
