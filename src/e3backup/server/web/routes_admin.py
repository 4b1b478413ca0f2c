"""Admin view (seed 002 "UI/UX (admin)", admin role only): jobs and runs of every tenant the
admin sees with engine, destination and agent columns, filters, maintenance buttons whose
commands are followed by polling, and the audit log (paginated, filtered by action)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Form, Query
from fastapi.responses import Response

from e3backup.server.db.models.jobs import ENGINES
from e3backup.server.db.models.runs import RUN_STATUSES
from e3backup.server.schemas.common import IdPath, OffsetQuery
from e3backup.server.services import admin, audit, remote_commands, repositories
from e3backup.server.web.view import PageView, View, safe_next

router = APIRouter(include_in_schema=False)
RUNS_PER_PAGE = 25
AUDIT_PER_PAGE = 25
FilterText = Annotated[str, Query(max_length=40)]


def _chosen(value: str, allowed: tuple[str, ...] | list[str]) -> str | None:
    return value if value in allowed else None


def _pager(
    params: dict[str, Any], name: str, offset: int, per_page: int, total: int
) -> dict[str, Any]:
    """Previous/next links of one table, keeping the other filters."""

    def url(to: int) -> str:
        kept = {k: v for k, v in {**params, name: to}.items() if v not in (None, "", 0)}
        return "/admin?" + urlencode(kept) if kept else "/admin"

    return {
        "first": offset + 1 if total else 0,
        "last": min(offset + per_page, total),
        "total": total,
        "prev": url(max(offset - per_page, 0)) if offset > 0 else None,
        "next": url(offset + per_page) if offset + per_page < total else None,
    }


@router.get("/admin")
def admin_page(
    page: PageView,
    tenant_id: FilterText = "",
    engine: FilterText = "",
    status: FilterText = "",
    action: Annotated[str, Query(max_length=100)] = "",
    runs_offset: OffsetQuery = 0,
    audit_offset: OffsetQuery = 0,
) -> Response:
    tenant = int(tenant_id) if tenant_id.isdigit() else None
    scope = admin.admin_scope(page.db, page.actor, tenant)
    flt = admin.AdminFilter(tenant, _chosen(engine, ENGINES), _chosen(status, RUN_STATUSES))
    actions = audit.action_names(page.db, scope)
    chosen_action = _chosen(action, actions)
    run_rows, runs_total = admin.run_rows(page.db, scope, flt, RUNS_PER_PAGE, runs_offset)
    entries, audit_total = audit.list_entries(
        page.db, scope, chosen_action, AUDIT_PER_PAGE, audit_offset
    )
    params = {
        "tenant_id": tenant or "",
        "engine": flt.engine or "",
        "status": flt.status or "",
        "action": chosen_action or "",
        "runs_offset": runs_offset,
        "audit_offset": audit_offset,
    }
    return page.render(
        "admin.html",
        flt=flt,
        tenant_names=admin.tenant_names(page.db, admin.admin_scope(page.db, page.actor)),
        engines=ENGINES,
        statuses=RUN_STATUSES,
        actions=actions,
        chosen_action=chosen_action,
        jobs=admin.job_rows(page.db, scope, flt),
        runs=run_rows,
        runs_pager=_pager(params, "runs_offset", runs_offset, RUNS_PER_PAGE, runs_total),
        entries=entries,
        audit_pager=_pager(params, "audit_offset", audit_offset, AUDIT_PER_PAGE, audit_total),
    )


def _back(page: View) -> str:
    referer = urlsplit(page.request.headers.get("referer", ""))
    back = safe_next(referer.path + (f"?{referer.query}" if referer.query else ""), "/admin")
    return back if back.startswith("/admin") else "/admin"


@router.post("/admin/jobs/{job_id}/maintenance")
def job_maintenance(
    job_id: IdPath, page: PageView, kind: Annotated[str, Form(max_length=10)] = "quick"
) -> Response:
    scope = admin.admin_scope(page.db, page.actor)
    command = repositories.queue_maintenance(
        page.db, page.ctx.box, scope, job_id, kind, page.ctx.settings.command_ttl_s
    )
    label = "Full maintenance" if kind == "full" else "Check"
    return page.redirect(_back(page), f"{label} queued for job {job_id} (command {command.id}).")


@router.get("/admin/commands/{command_id}")
def command_status(command_id: IdPath, page: PageView) -> Response:
    """One maintenance command's state: what its table cell polls until it ends."""
    scope = admin.admin_scope(page.db, page.actor)
    command = remote_commands.get_command(page.db, scope, command_id)
    return page.render("_admin_command.html", command=command)
