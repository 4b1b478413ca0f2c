"""`create_app(settings)`: the FastAPI application. Nothing runs at import; the lifespan opens
the database and key file, migrates, and starts the background loops."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from e3backup import __version__
from e3backup.server import background, web
from e3backup.server.api import (
    agent,
    errors,
    health,
    metrics,
    recovery,
    v1_agents,
    v1_auth,
    v1_jobs,
    v1_points,
    v1_runs,
)
from e3backup.server.api.agent_fast import AgentFastPath
from e3backup.server.context import ServerContext
from e3backup.server.db import migrate
from e3backup.server.metrics import DatabaseCollector, LatencyMiddleware, new_registry
from e3backup.server.settings import ServerSettings

log = logging.getLogger(__name__)
ROUTERS = (
    health.router,
    metrics.router,
    agent.router,
    v1_auth.router,
    v1_agents.router,
    v1_jobs.router,
    v1_runs.router,
    v1_points.router,
    recovery.router,
)


def create_app(settings: ServerSettings, ctx: ServerContext | None = None) -> FastAPI:
    """The app; `ctx` lets tests and the CLI share an already opened context."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context = ctx or ServerContext.open(settings)
        migrate.upgrade(context.engine)
        app.state.ctx = context
        collector = DatabaseCollector(context.sessions, settings.agent_online_window_s)
        registry.register(collector)
        loops = background.start(context)
        log.info("e3backup server ready (database %s)", context.engine.dialect.name)
        try:
            yield
        finally:
            loops.stop()
            context.gate.flush_last_seen()
            registry.unregister(collector)
            if ctx is None:
                context.close()

    app = FastAPI(
        title="e3backup control server",
        version=__version__,
        lifespan=lifespan,
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    web.install(app)  # after the API: its error handlers wrap the API's
    app.add_middleware(errors.BodySizeLimit, max_bytes=settings.max_body_bytes)
    registry, latency = new_registry()
    app.state.metrics_registry = registry
    app.add_middleware(LatencyMiddleware, histogram=latency)
    app.add_middleware(AgentFastPath, histogram=latency, max_body_bytes=settings.max_body_bytes)
    return app
