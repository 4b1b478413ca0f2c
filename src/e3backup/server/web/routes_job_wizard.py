"""The job wizard (create and edit): one page whose steps Alpine shows one at a time
(static/js/jobs.js), saved by a single POST. The services validate; an error re-renders the
wizard with the entered values, the message next to its input and that step open. The
browsers, the connection test and the schedule preview are fragments (routes_job_fragments)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from e3backup.server.db.models import Job
from e3backup.server.schemas.common import IdPath
from e3backup.server.services import jobs
from e3backup.server.services.errors import Invalid
from e3backup.server.services.job_list import agent_choices
from e3backup.server.web import job_form
from e3backup.server.web.job_form import FieldError
from e3backup.server.web.routes_jobs import WEEKDAYS
from e3backup.server.web.view import PageView, View

router = APIRouter(include_in_schema=False)
COMPRESSION = (
    ("zstd", "zstd (default level)"),
    ("zstd-3", "zstd level 3 (faster)"),
    ("zstd-9", "zstd level 9"),
    ("zstd-19", "zstd level 19 (smallest)"),
    ("none", "none"),
)


async def posted_form(request: Request) -> FormData:
    return await request.form()  # already parsed (and cached) by the CSRF check


Posted = Annotated[FormData, Depends(posted_form)]


def _wizard(
    page: View, values: dict[str, Any], job: Job | None, error: FieldError | None = None
) -> Response:
    page.actor.require("admin")  # only admins save jobs (services/jobs): no form for others
    state = {
        "paths": values["source_paths"],
        "vms": values["vms"],
        "step": error.step if error else "engine",
        "job_id": job.id if job else None,
    }
    return page.render(
        "job_wizard.html",
        status_code=422 if error else 200,
        job=job,
        values=values,
        error=error,
        state=json.dumps(state),
        steps=job_form.STEPS,
        engines=job_form.ENGINES,
        agents=agent_choices(page.db, page.actor, page.ctx.settings.agent_online_window_s),
        compression=COMPRESSION,
        weekdays=WEEKDAYS,
        keep=job_form.KEEP,
    )


@router.get("/jobs/new")
def new_job(page: PageView) -> Response:
    return _wizard(page, dict(job_form.DEFAULTS), None)


@router.post("/jobs/new")
def create_job(page: PageView, form: Posted) -> Response:
    values = job_form.values_from_form(form)
    try:
        job = jobs.create_job(
            page.db,
            page.ctx.box,
            page.actor,
            job_form.create_spec(values, job_form.secrets_from_form(form)),
        )
    except ValidationError as exc:
        return _wizard(page, values, None, job_form.validation_error(exc))
    except Invalid as exc:
        page.db.rollback()
        return _wizard(page, values, None, job_form.field_error(exc.field, str(exc)))
    return page.redirect("/jobs", f"Job {job.name} saved.")


@router.get("/jobs/{job_id}/edit")
def edit_job(job_id: IdPath, page: PageView) -> Response:
    job = jobs.get_job(page.db, page.actor, job_id)
    return _wizard(page, job_form.values_from_job(job), job)


@router.post("/jobs/{job_id}/edit")
def update_job(job_id: IdPath, page: PageView, form: Posted) -> Response:
    job = jobs.get_job(page.db, page.actor, job_id)
    values = job_form.values_from_form(form)
    try:
        spec = job_form.update_spec(values, job_form.secrets_from_form(form), job)
        jobs.update_job(page.db, page.ctx.box, page.actor, job_id, spec)
    except ValidationError as exc:
        return _wizard(page, values, job, job_form.validation_error(exc))
    except Invalid as exc:
        page.db.rollback()
        job = jobs.get_job(page.db, page.actor, job_id)
        return _wizard(page, values, job, job_form.field_error(exc.field, str(exc)))
    return page.redirect("/jobs", f"Job {job.name} saved.")
