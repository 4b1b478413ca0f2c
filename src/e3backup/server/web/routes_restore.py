"""The restore wizard (seed 001 "Hyper-V Restore Wizard", for every engine): 1. select a backup
point (of a VM or a job; type filter, pagination) → 2. disks, target path and format → 3. review
→ start (services/restores.start_restore, as POST /api/v1/restores) → the restore run's live
progress page. Each step is a page of its own (GET parameters), so it works without JavaScript
and a test or a person can go back and forth with the browser."""

from __future__ import annotations

from typing import Annotated, Any, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query
from fastapi.responses import Response

from e3backup.server.db.models import BackupPoint
from e3backup.server.schemas.common import IdQuery
from e3backup.server.schemas.points import RestoreRequest
from e3backup.server.services import agents, backup_points, restores, vms
from e3backup.server.services.errors import Invalid, NotFound
from e3backup.server.web import routes_vms
from e3backup.server.web.view import PageView, View

router = APIRouter(include_in_schema=False)
FORMATS: tuple[str, ...] = get_args(RestoreRequest.model_fields["format"].annotation)
Text = Annotated[str, Query(max_length=2000)]
Offset = Annotated[int, Query(ge=0, le=10**9)]
NOT_RESTORABLE = (
    "This backup point is not restorable: its restore chain is broken or its disk manifests are "
    "missing. Choose another point (a Full one is the simplest to restore)."
)


def _agent_status(page: View, point: BackupPoint) -> dict[str, Any] | None:
    if point.agent_id is None:
        return None
    agent = agents.get_agent(page.db, page.actor, point.agent_id)
    online = agents.is_online(agent, page.ctx.settings.agent_online_window_s)
    return {"agent": agent, "online": online}


def _disks(page: View, point: BackupPoint) -> list[dict[str, Any]]:
    """The point's disks (keys of its disk manifests) with the sizes the agent reported."""
    sizes: dict[str, int] = {}
    if point.vm_id is not None:
        for disk in vms.vm_disks(page.db, [point.vm_id])[point.vm_id]:
            sizes[disk.disk_path] = disk.size_bytes
    return [
        {"key": key, "name": key.replace("\\", "/").rsplit("/", 1)[-1], "size": sizes.get(key)}
        for key in (point.disk_manifests_json or {})
    ]


def _choose_step(
    page: View, vm_id: int | None, job_id: int | None, type_: str, offset: int
) -> Response:
    if vm_id is None and job_id is None:
        raise Invalid(
            "vm_id is required: open the wizard from a VM or a job's backup points", "vm_id"
        )
    vm = vms.get_vm(page.db, page.actor, vm_id) if vm_id is not None else None
    rows, total = backup_points.list_points(
        page.db,
        page.actor,
        vm_id=vm_id,
        job_id=job_id if vm_id is None else None,
        backup_type=routes_vms.backup_type(type_),
        limit=routes_vms.PAGE_SIZE,
        offset=offset,
    )
    scope = f"vm_id={vm_id}" if vm_id is not None else f"job_id={job_id}"
    return page.render(
        "restore.html",
        step=1,
        title=vm.name if vm else (rows[0].source_name if rows else f"job #{job_id}"),
        points=[backup_points.point_out(p) for p in rows],
        total=total,
        offset=offset,
        page_size=routes_vms.PAGE_SIZE,
        scope=scope,
        type=type_,
        types=routes_vms.BACKUP_TYPES,
    )


def _configure_step(page: View, point: BackupPoint, step: int, values: dict[str, Any]) -> Response:
    errors: dict[str, str] = values.pop("errors", {})
    disks = _disks(page, point)
    if step == 3 and disks and not values.get("disks"):
        errors["disk_filter"] = "No disks selected: choose at least one disk."
    if step == 3 and not values.get("target_path", "").strip():
        errors["target_path"] = "target_path is required: where the agent writes."
    if errors:
        step = 2
    everything = [] if "disk_filter" in errors else [d["key"] for d in disks]
    chosen = values.get("disks") or everything
    fields = {"point_id": point.id, "target_path": values.get("target_path", "")}
    fields.update(format=values.get("format") or "raw", disk=chosen)
    scope = f"vm_id={point.vm_id}" if point.vm_id is not None else f"job_id={point.job_id}"
    return page.render(
        "restore.html",
        step=step,
        title=point.source_name,
        scope=scope,
        edit_query=urlencode(fields, doseq=True),
        point=backup_points.point_out(point),
        disks=disks,
        chosen=chosen,
        target_path=values.get("target_path", ""),
        format=values.get("format") or "raw",
        formats=FORMATS,
        agent=_agent_status(page, point),
        errors=errors,
        not_restorable=None if backup_points.is_restorable(point) else NOT_RESTORABLE,
        status_code=422 if errors else 200,
    )


def _point(page: View, point_id: int) -> BackupPoint:
    point = backup_points.get_point(page.db, page.actor, point_id)
    if point is None:
        raise NotFound("Backup point not found")
    return point


@router.get("/restore")
def wizard(
    page: PageView,
    vm_id: IdQuery = None,
    job_id: IdQuery = None,
    point_id: IdQuery = None,
    step: Annotated[int, Query(ge=1, le=3)] = 2,
    target_path: Text = "",
    disk: Annotated[list[str] | None, Query(max_length=1000)] = None,
    format: Annotated[str, Query(max_length=10)] = "raw",
    type: routes_vms.TypeQuery = "",
    offset: Offset = 0,
) -> Response:
    page.actor.require("operator")  # the same rule start_restore enforces: no wizard to viewers
    if point_id is None:
        return _choose_step(page, vm_id, job_id, type, offset)
    values = {"target_path": target_path, "disks": disk or [], "format": format}
    return _configure_step(page, _point(page, point_id), step, values)


@router.post("/restores")
def start(
    page: PageView,
    point_id: Annotated[int, Form(ge=1)],
    target_path: Annotated[str, Form(max_length=2000)] = "",
    disk: Annotated[list[str] | None, Form()] = None,
    format: Annotated[str, Form(max_length=10)] = "raw",
) -> Response:
    values: dict[str, Any] = {"target_path": target_path, "disks": disk or [], "format": format}
    try:
        if format not in FORMATS:
            raise Invalid(f"format: one of {', '.join(FORMATS)}", "format")
        request = RestoreRequest.model_validate(
            {
                "backup_point_id": point_id,
                "target_path": target_path,
                "disk_filter": disk or [],
                "format": format,
            }
        )
        started = restores.start_restore(page.db, page.ctx.box, page.actor, request)
    except (Invalid, NotFound) as exc:
        point = _point(page, point_id)
        values["errors"] = {getattr(exc, "field", None) or "form": str(exc)}
        return _configure_step(page, point, 3, values)
    run = started.run
    return page.redirect(f"/runs/{run.id}/live", f"Restore started (run #{run.id}).")
