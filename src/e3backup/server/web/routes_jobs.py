"""Jobs: the list (agent, schedule, last and next run) and its actions — run now (operator),
enable/disable and delete (admin, delete behind the confirmation dialog). The services check
the role; the template only hides what they would refuse."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from e3backup.server.schemas.common import IdPath
from e3backup.server.schemas.jobs import JobUpdate
from e3backup.server.services import jobs, runs
from e3backup.server.services.job_list import job_rows
from e3backup.server.web.job_form import ENGINES
from e3backup.server.web.view import PageView

router = APIRouter(include_in_schema=False)
ENGINE_LABELS = {key: label for key, label, _ in ENGINES}
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def schedule_text(schedule: dict[str, object] | None, timezone: str) -> str:
    """A job's schedule in words, e.g. "daily at 02:30 (Europe/Berlin)"."""
    doc = schedule or {}
    kind = str(doc.get("type") or "manual")
    if kind == "manual":
        return "manual"
    if kind == "hourly":
        return f"hourly at minute {doc.get('minute') or 0}"
    if kind == "cron":
        return f"cron {doc.get('cron')} ({timezone})"
    days = doc.get("weekdays", doc.get("weekday"))
    if kind == "weekly":
        names = days if isinstance(days, list) else [days]
        label = ", ".join(
            WEEKDAYS[d][:3] if isinstance(d, int) and 0 <= d < 7 else str(d) for d in names
        )
        return f"weekly {label} at {doc.get('time')} ({timezone})"
    return f"daily at {doc.get('time')} ({timezone})"


@router.get("/jobs")
def jobs_page(page: PageView) -> Response:
    rows, total = job_rows(page.db, page.actor)
    return page.render(
        "jobs.html",
        rows=rows,
        total=total,
        engine_labels=ENGINE_LABELS,
        schedule_text=schedule_text,
    )


@router.post("/jobs/{job_id}/run")
def run_now(job_id: IdPath, page: PageView) -> Response:
    run = runs.start_manual_run(page.db, page.actor, job_id)
    return page.redirect("/jobs", f"Run #{run.id} queued; the agent starts it on its next poll.")


@router.post("/jobs/{job_id}/enable")
def enable(job_id: IdPath, page: PageView) -> Response:
    job = jobs.update_job(page.db, page.ctx.box, page.actor, job_id, JobUpdate(enabled=True))
    return page.redirect("/jobs", f"Job {job.name} enabled.")


@router.post("/jobs/{job_id}/disable")
def disable(job_id: IdPath, page: PageView) -> Response:
    job = jobs.update_job(page.db, page.ctx.box, page.actor, job_id, JobUpdate(enabled=False))
    return page.redirect("/jobs", f"Job {job.name} disabled; it runs only when started.")


@router.post("/jobs/{job_id}/delete")
def delete(job_id: IdPath, page: PageView) -> Response:
    name = jobs.get_job(page.db, page.actor, job_id).name
    jobs.delete_job(page.db, page.actor, job_id)
    return page.redirect("/jobs", f"Job {name} deleted; its runs and backup points stay.")
