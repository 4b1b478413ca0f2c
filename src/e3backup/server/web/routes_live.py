"""Live progress of any run (backup or restore; seed cloudbackup_live): the page, the small
JSON document static/js/live.js polls every ~2 s (progress, per-item states and the events
after the last one it has), and Cancel behind the confirmation dialog."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from e3backup.server.db.models import Run
from e3backup.server.schemas.common import IdPath
from e3backup.server.services import events, run_view, runs
from e3backup.server.services.run_states import is_terminal
from e3backup.server.web.templating import iso, status_class, status_label
from e3backup.server.web.view import SECURITY_HEADERS, PageView

router = APIRouter(include_in_schema=False)
EVENTS_PER_POLL = 200
LIVE_POLL_MS = 2000
PROGRESS_KEYS = (
    "progress_pct",
    "bytes_processed",
    "bytes_transferred",
    "bytes_total",
    "speed_bytes_per_sec",
    "eta_seconds",
    "current_item",
    "error",
    "error_code",
)


def _progress(run: Run) -> dict[str, Any]:
    doc: dict[str, Any] = {key: getattr(run, key) for key in PROGRESS_KEYS}
    doc.update(
        status=run.status,
        status_class=status_class(run.status),
        status_label=status_label(run.status),
        terminal=is_terminal(run.status),
        cancel_requested=run.cancel_requested,
        finished_at=iso(run.finished_at),
        dedup_savings=run_view.dedup_savings(run.bytes_processed, run.bytes_transferred),
    )
    if doc["terminal"] and run.status in ("success", "warning"):
        doc["progress_pct"] = 100.0  # an agent's last update may stop short of 100
    if run.status == "cancelled":  # the reason is not an error: the event log says who cancelled
        doc["error"] = doc["error_code"] = None
    return doc


@router.get("/runs/{run_id}/live")
def live_page(run_id: IdPath, page: PageView) -> Response:
    run = runs.get_run(page.db, page.actor, run_id)
    progress = _progress(run)
    return page.render(
        "live.html",
        run=run,
        job=run_view.run_job(page.db, run),
        progress=progress,
        items=run_view.item_states(page.db, run),
        item_kind="VM" if run.run_type == "backup" else "Disk",
        poll_ms=LIVE_POLL_MS,
    )


@router.get("/runs/{run_id}/live.json")
def live_state(
    run_id: IdPath,
    page: PageView,
    after_event_id: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> Response:
    """The run's progress and item states, and its events after `after_event_id` (in order;
    the page appends them and asks for the ones after the last)."""
    run = runs.get_run(page.db, page.actor, run_id)
    new_events = events.list_events(page.db, run.id, after_event_id, EVENTS_PER_POLL)
    doc = _progress(run)
    doc["items"] = [
        {
            **item.as_dict(),
            "state_class": status_class(item.state),
            "state_label": status_label(item.state),
        }
        for item in run_view.item_states(page.db, run)
    ]
    doc["events"] = [
        {
            "id": e.id,
            "ts": iso(e.ts),
            "level": e.level,
            "message": e.message,
        }
        for e in new_events
    ]
    doc["more_events"] = len(new_events) == EVENTS_PER_POLL
    return JSONResponse(doc, headers=SECURITY_HEADERS)


@router.post("/runs/{run_id}/cancel")
def cancel(run_id: IdPath, page: PageView) -> Response:
    run = runs.cancel_run(page.db, page.actor, run_id)
    if run.status == "cancelled":
        return page.redirect(f"/runs/{run.id}/live", f"Run #{run.id} cancelled.")
    return page.redirect(
        f"/runs/{run.id}/live",
        f"Cancel requested for run #{run.id}: the agent stops it at its next check.",
        "info",
    )
