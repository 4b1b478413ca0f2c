"""Errors on UI paths answer as pages: no session → redirect to /login; a refused or invalid
request → the error page with the service's message and the API's status code. API paths keep
their JSON answers (api/errors.py); the handlers below wrap those."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from e3backup.server.api.errors import STATUS_BY_ERROR
from e3backup.server.services import errors
from e3backup.server.web.view import SignInRequired, render_page

NOT_UI_PREFIXES = ("/api/", "/healthz", "/metrics", "/static/")
Handler = Callable[[Request, Any], Response | Awaitable[Response]]
TITLES = {
    400: "Bad request",
    401: "Not signed in",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    422: "Check your input",
    429: "Too many attempts",
}


def is_ui_request(request: Request) -> bool:
    return not request.url.path.startswith(NOT_UI_PREFIXES)


def error_page(request: Request, status_code: int, message: str) -> Response:
    return render_page(
        request,
        "error.html",
        status_code,
        title=TITLES.get(status_code, "Something went wrong"),
        message=message,
        code=status_code,
    )


def _ui_answer(request: Request, exc: Exception) -> Response:
    if isinstance(exc, SignInRequired) or (
        isinstance(exc, errors.Unauthorized) and request.method == "GET"
    ):
        query = urlencode({"next": request.url.path}) if request.url.path != "/" else ""
        login = f"/login{'?' + query if query else ''}"
        if request.headers.get("HX-Request"):  # htmx: a full-page visit, not a swapped fragment
            return Response(status_code=401, headers={"HX-Redirect": login})
        return RedirectResponse(login, status_code=303)
    if isinstance(exc, errors.ServiceError):
        code = next((c for cls, c in STATUS_BY_ERROR if isinstance(exc, cls)), 400)
        return error_page(request, code, str(exc))
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:])
        return error_page(request, 422, f"{field}: {first.get('msg', 'invalid input')}")
    assert isinstance(exc, StarletteHTTPException)
    return error_page(request, exc.status_code, str(exc.detail))


def install(app: FastAPI) -> None:
    """Wrap the API's handlers: UI paths get pages, API paths what they always got."""
    for exc_class in (errors.ServiceError, RequestValidationError, StarletteHTTPException):
        api_handler: Handler = app.exception_handlers[exc_class]

        def handler(request: Request, exc: Any, _api: Handler = api_handler) -> Any:
            return _ui_answer(request, exc) if is_ui_request(request) else _api(request, exc)

        app.add_exception_handler(exc_class, handler)
