"""Repositories: one card per job destination with what agents reported (size, dedup ratio,
snapshots per source, last check) and the maintenance buttons; a queued command is followed
by polling the card's fragment until the agent answers (no request waits for the agent)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import Response

from e3backup.server.services import repositories
from e3backup.server.services.errors import Conflict
from e3backup.server.web.view import PageView

router = APIRouter(include_in_schema=False)
KIND_LABELS = {"quick": "Check", "full": "Full maintenance"}


@router.get("/repositories")
def repositories_page(page: PageView) -> Response:
    served: frozenset[str] = page.request.app.state.ui_pages
    return page.render(
        "repositories.html",
        repositories=repositories.list_repositories(page.db, page.actor),
        create_url="/jobs" if "/jobs" in served else "/agents",
    )


@router.get("/repositories/{key}")
def repository_card(key: str, page: PageView) -> Response:
    """The card alone: what a queued command's card polls until the command ends."""
    repo = repositories.get_repository(page.db, page.actor, key)
    return page.render("_repository_card.html", repo=repo)


@router.post("/repositories/{key}/maintenance")
def run_maintenance(
    key: str, page: PageView, kind: Annotated[str, Form(max_length=10)] = "quick"
) -> Response:
    repo = repositories.get_repository(page.db, page.actor, key)
    job = repo.maintenance_job
    if job is None:
        raise Conflict("no job of this repository has an agent to run its maintenance")
    command = repositories.queue_maintenance(
        page.db, page.ctx.box, page.actor, job.id, kind, page.ctx.settings.command_ttl_s
    )
    label = KIND_LABELS.get(kind, kind)
    return page.redirect(
        f"/repositories#repo-{key}", f"{label} queued for {repo.repository} (command {command.id})."
    )
