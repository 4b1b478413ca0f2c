"""Every error answer is JSON `{"status": "error", "detail": "...", "field": ...}`; bad input
is a 4xx with a message, never a stack trace."""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from e3backup.server.services import errors

log = logging.getLogger(__name__)

STATUS_BY_ERROR: list[tuple[type[errors.ServiceError], int]] = [
    (errors.NotFound, 404),
    (errors.Forbidden, 403),
    (errors.Unauthorized, 401),
    (errors.RateLimited, 429),
    (errors.Conflict, 409),
    (errors.Invalid, 422),
]


class ErrorBody(BaseModel):
    """Every error answer (4xx and 5xx)."""

    status: Literal["error"] = "error"
    detail: str
    field: str | None = None


def error_body(detail: str, field: str | None = None) -> dict[str, Any]:
    return {"status": "error", "detail": detail, "field": field}


def _document_error_body(app: FastAPI) -> None:
    """FastAPI documents every 422 as its own HTTPValidationError (`detail` a list); the
    answers are ErrorBody, so the document says so (schema-driven clients and tests rely on it)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = generate()
        schemas = doc.get("components", {}).get("schemas", {})
        if "HTTPValidationError" in schemas:
            schemas["HTTPValidationError"] = ErrorBody.model_json_schema()
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    field = ".".join(loc) or None
    message = str(first.get("msg", "invalid request"))
    if first.get("type") == "extra_forbidden":
        message = "unknown field"
    if first.get("type") == "json_invalid":
        return "request body is not valid JSON", None
    return (f"{field}: {message}" if field else message), field


def install(app: FastAPI) -> None:
    _document_error_body(app)

    @app.exception_handler(errors.ServiceError)
    def _service(_request: Request, exc: errors.ServiceError) -> JSONResponse:
        status = next((code for cls, code in STATUS_BY_ERROR if isinstance(exc, cls)), 400)
        field = exc.field if isinstance(exc, errors.Invalid) else None
        headers = {"Retry-After": "60"} if status == 429 else None
        return JSONResponse(error_body(str(exc), field), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = _validation_message(exc)
        return JSONResponse(error_body(message, field), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(IntegrityError)
    def _integrity(_request: Request, exc: IntegrityError) -> JSONResponse:
        log.info("integrity conflict: %s", exc.orig)
        return JSONResponse(
            error_body("the request conflicts with the current state; try again"), status_code=409
        )

    @app.exception_handler(OperationalError)
    def _busy(_request: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc.orig)
        return JSONResponse(
            error_body("the database is busy; retry shortly"),
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error: %s", type(exc).__name__, exc_info=exc)
        return JSONResponse(error_body("internal server error"), status_code=500)


class BodySizeLimit:
    """413 for a request body over `max_bytes`, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._reject(send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        response = JSONResponse(
            error_body(f"request body larger than {self.max_bytes} bytes"), status_code=413
        )
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


class _TooLarge(Exception):
    pass
