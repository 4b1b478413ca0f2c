"""Dashboard: agents online/offline, runs of the last 24 h by status, what needs attention,
the next scheduled runs, storage per repository (services/overview.py)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import Response

from e3backup.server.db.base import utcnow
from e3backup.server.db.models.runs import RUN_STATUSES
from e3backup.server.services import overview
from e3backup.server.web.view import PageView

router = APIRouter(include_in_schema=False)


@router.get("/")
def dashboard(page: PageView) -> Response:
    now = utcnow()
    window = page.ctx.settings.agent_online_window_s
    counts = overview.run_counts_since(page.db, page.actor, now - timedelta(hours=24))
    return page.render(
        "dashboard.html",
        agents=overview.agent_counts(page.db, page.actor, window),
        run_counts=[(s, counts.get(s, 0)) for s in RUN_STATUSES if counts.get(s)],
        runs_total=sum(counts.values()),
        attention=overview.needs_attention(page.db, page.actor, now, window),
        upcoming=overview.next_scheduled(page.db, page.actor),
        repositories=overview.repository_usage(page.db, page.actor),
    )
