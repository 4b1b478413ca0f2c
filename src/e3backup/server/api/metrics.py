"""`/metrics` for Prometheus. Open on the loopback default; with `metrics_token` set, a scrape
needs `Authorization: Bearer <token>` (the gauges name job and tenant ids)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from e3backup.server.deps import Ctx
from e3backup.server.services.errors import Unauthorized

router = APIRouter(tags=["health"])


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, ctx: Ctx) -> Response:
    expected = ctx.settings.metrics_token
    if expected:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized("a valid metrics token is required")
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
