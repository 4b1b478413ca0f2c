"""Runs: the history (filters by job, status, engine and date range; pagination) and a run's
detail with its formatted event log and its log lines (services/runs.py, services/events.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from fastapi.responses import Response

from e3backup.server.db.models.jobs import ENGINES
from e3backup.server.db.models.runs import RUN_STATUSES
from e3backup.server.schemas.common import IdPath
from e3backup.server.services import events, jobs, run_view, runs
from e3backup.server.services.errors import Invalid
from e3backup.server.web.view import PageView

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 25
MAX_JOBS_LISTED = 500
MAX_EVENTS_SHOWN = 1000
MAX_LOG_LINES = 2000
Choice = Annotated[str, Query(max_length=40)]
DateText = Annotated[str, Query(max_length=10)]


def _day(text: str, field: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise Invalid(f"{field}: use a date like 2025-01-31", field) from None


def _utc(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def run_filter(job: str, status: str, engine: str, since: str, until: str) -> runs.RunFilter:
    """The form's values as a RunFilter; `until` includes its whole day (UTC)."""
    if job and not job.isdigit():
        raise Invalid("job: pick a job from the list", "job")
    if status and status not in RUN_STATUSES:
        raise Invalid(f"status: one of {', '.join(RUN_STATUSES)}", "status")
    if engine and engine not in ENGINES:
        raise Invalid(f"engine: one of {', '.join(ENGINES)}", "engine")
    first, last = _day(since, "since"), _day(until, "until")
    return runs.RunFilter(
        job_id=int(job) if job else None,
        status=status or None,
        engine=engine or None,
        since=_utc(first) if first else None,
        until=_utc(last) + timedelta(days=1) if last else None,
    )


@router.get("/runs")
def runs_page(
    page: PageView,
    job: Choice = "",
    status: Choice = "",
    engine: Choice = "",
    since: DateText = "",
    until: DateText = "",
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Response:
    flt = run_filter(job, status, engine, since, until)
    rows, total = runs.list_runs(page.db, page.actor, flt, PAGE_SIZE, offset)
    job_rows, _ = jobs.list_jobs(page.db, page.actor, None, MAX_JOBS_LISTED, 0)
    query = {"job": job, "status": status, "engine": engine, "since": since, "until": until}
    kept = {k: v for k, v in query.items() if v}
    return page.render(
        "runs.html",
        runs=rows,
        total=total,
        offset=offset,
        page_size=PAGE_SIZE,
        query=query,
        filtered=bool(kept),
        base_query=urlencode(kept),
        jobs=job_rows,
        job_names={j.id: j.name for j in job_rows},
        statuses=RUN_STATUSES,
        engines=ENGINES,
    )


@router.get("/runs/{run_id}")
def run_detail(run_id: IdPath, page: PageView) -> Response:
    run = runs.get_run(page.db, page.actor, run_id)
    job = run_view.run_job(page.db, run)
    return page.render(
        "run_detail.html",
        run=run,
        job=job,
        items=run_view.item_states(page.db, run),
        events=events.list_events(page.db, run.id, 0, MAX_EVENTS_SHOWN),
        logs=events.list_logs(page.db, run.id, 0, MAX_LOG_LINES),
        savings=run_view.dedup_savings(run.bytes_processed, run.bytes_transferred),
    )
