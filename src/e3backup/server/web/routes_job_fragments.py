"""The job wizard's fragments (htmx): the file/volume browser and the VM browser, the
destination test and the schedule preview. No request waits for an agent: a command is
queued and its fragment polls `/jobs/wizard/commands/{id}` until the agent has answered."""

from __future__ import annotations

from datetime import timedelta
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query
from fastapi.responses import Response
from pydantic import ValidationError

from e3backup.server.db.base import utcnow
from e3backup.server.db.models import Command
from e3backup.server.schemas.commands import TestDestinationRequest
from e3backup.server.schemas.common import IdPath
from e3backup.server.schemas.jobs import ScheduleSpec
from e3backup.server.services import agents, jobs, remote_commands
from e3backup.server.services.errors import Invalid
from e3backup.server.services.job_list import vm_choices
from e3backup.server.web import job_form
from e3backup.server.web.routes_job_wizard import Posted
from e3backup.server.web.view import PageView, View, render_page

router = APIRouter(include_in_schema=False)
POLL = "every 1s"
Hypervisor = Annotated[str, Query(pattern="^(kvm|hyperv)$")]
Text = Annotated[str, Form(max_length=4000)]
DESTINATION = set(remote_commands.DESTINATION_FIELDS)


def _fragment(page: View, template: str, **context: Any) -> Response:
    return render_page(page.request, template, view=page, csrf_token=page.csrf_token, **context)


def crumbs(path: str) -> list[tuple[str, str]]:
    """Breadcrumb (label, path) from the host's roots down to `path`."""
    if not path:
        return []
    windows = (len(path) >= 2 and path[1] == ":") or path.startswith("\\\\")
    pure = PureWindowsPath(path) if windows else PurePosixPath(path)
    out = [(pure.anchor, pure.anchor)]
    current = PureWindowsPath(pure.anchor) if windows else PurePosixPath(pure.anchor)
    for part in pure.parts[1:]:
        current = current / part
        out.append((part, str(current)))
    return out


def _expired(command: Command) -> bool:
    if command.status == "expired":
        return True
    open_ = command.status in ("pending", "delivered")
    return open_ and command.expires_at.replace(tzinfo=None) < utcnow().replace(tzinfo=None)


def _waiting(page: View, command: Command, url: str, what: str) -> Response:
    waited = utcnow().replace(tzinfo=None) - command.created_at.replace(tzinfo=None)
    return _fragment(
        page,
        "_job_wait.html",
        url=url,
        poll=POLL,
        what=what,
        slow=waited > timedelta(seconds=15),
        command=command,
    )


@router.post("/jobs/wizard/browse")
def browse(page: PageView, agent_id: Annotated[int, Form(ge=1)], path: Text = "") -> Response:
    command = remote_commands.queue_browse(page.db, page.ctx.box, page.actor, agent_id, path)
    return _waiting(page, command, f"/jobs/wizard/commands/{command.id}", "the folder listing")


@router.get("/jobs/wizard/vms")
def vm_list(
    page: PageView, agent_id: Annotated[int, Query(ge=1)], hypervisor: Hypervisor
) -> Response:
    agent = agents.get_agent(page.db, page.actor, agent_id)
    rows = vm_choices(page.db, page.actor, agent_id, hypervisor)
    return _fragment(page, "_job_vms.html", agent=agent, vms=rows, hypervisor=hypervisor)


@router.post("/jobs/wizard/vms/refresh")
def refresh_vms(
    page: PageView, agent_id: Annotated[int, Form(ge=1)], hypervisor: Annotated[str, Form()]
) -> Response:
    if hypervisor not in ("kvm", "hyperv"):
        raise Invalid("hypervisor must be kvm or hyperv", "hypervisor")
    command = remote_commands.queue_list_vms(page.db, page.ctx.box, page.actor, agent_id)
    url = f"/jobs/wizard/commands/{command.id}?hypervisor={hypervisor}"
    return _waiting(page, command, url, "the VM inventory")


@router.post("/jobs/wizard/test-destination")
def test_destination(page: PageView, form: Posted) -> Response:
    """Queue test_destination with the destination as entered (on edit, the saved secrets
    fill what was left empty); the chosen agent answers."""
    values = job_form.values_from_form(form)
    agent_id, job_id = values["agent_id"], str(form.get("job_id") or "")
    if not agent_id.isdigit():
        return _fragment(
            page,
            "_job_command_error.html",
            command=None,
            message="Choose the agent (step 2) first: it runs the test.",
        )
    fields = {k: v for k, v in job_form.wire_fields(values).items() if k in DESTINATION}
    fields.update(job_form.secrets_from_form(form))
    try:
        request = TestDestinationRequest.model_validate(
            {**fields, "job_id": int(job_id) if job_id.isdigit() else None, "wait_s": 0}
        )
        command = remote_commands.queue_test_destination(
            page.db, page.ctx.box, page.actor, int(agent_id), request
        )
    except ValidationError as exc:
        error = job_form.validation_error(exc)
        return _fragment(page, "_job_command_error.html", command=None, message=error.message)
    except Invalid as exc:
        return _fragment(page, "_job_command_error.html", command=None, message=str(exc))
    return _waiting(page, command, f"/jobs/wizard/commands/{command.id}", "the connection test")


@router.get("/jobs/wizard/commands/{command_id}")
def follow_command(
    command_id: IdPath, page: PageView, hypervisor: Annotated[str, Query()] = "kvm"
) -> Response:
    command = remote_commands.get_command(page.db, page.actor, command_id)
    if _expired(command):
        return _fragment(
            page,
            "_job_command_error.html",
            command=command,
            message="The agent did not answer in time. Is it online? Try again.",
        )
    if command.status in ("pending", "delivered"):
        url = str(page.request.url.path) + (
            f"?{page.request.url.query}" if page.request.url.query else ""
        )
        return _waiting(page, command, url, "the agent's answer")
    result: Any = command.result_json or {}
    if command.type == "browse_directory":
        path = str(result.get("path") or "")
        return _fragment(
            page,
            "_job_browse.html",
            agent_id=command.agent_id,
            path=path,
            crumbs=crumbs(path),
            entries=result.get("entries") or [],
            error=command.error or result.get("error"),
            truncated=bool(result.get("truncated")),
        )
    if command.type == "list_vms":
        if command.status == "failed":
            return _fragment(
                page,
                "_job_command_error.html",
                command=command,
                message=command.error or "the agent could not list its VMs",
            )
        return vm_list(
            page, command.agent_id, hypervisor if hypervisor in ("kvm", "hyperv") else "kvm"
        )
    return _fragment(page, "_job_test_result.html", command=command, result=result)


@router.get("/jobs/wizard/schedule-preview")
def schedule_preview(page: PageView) -> Response:
    """The next five runs of the schedule as entered, by the scheduler's own policy."""
    values = job_form.values_from_form(page.request.query_params)
    try:
        spec = ScheduleSpec.model_validate(job_form.schedule_json(values))
        times = jobs.schedule_preview(spec, values["timezone"] or "UTC", utcnow())
    except ValidationError as exc:
        return _fragment(
            page,
            "_job_preview.html",
            times=[],
            error=job_form.validation_error(exc).message,
            manual=False,
        )
    except Invalid as exc:
        return _fragment(
            page,
            "_job_preview.html",
            times=[],
            error=job_form.field_error(exc.field, str(exc)).message,
            manual=False,
        )
    return _fragment(
        page, "_job_preview.html", times=times, error=None, manual=spec.type == "manual"
    )
