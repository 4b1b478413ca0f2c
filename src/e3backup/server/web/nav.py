"""The main navigation. A page adds itself to NAV; an entry shows once a GET route of the UI
routers serves its path (so the menu never links to a page not built yet) and when the actor's
role allows it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI, Request
from starlette.routing import Route

from e3backup.server.services.auth import Actor


@dataclass(frozen=True)
class NavItem:
    label: str
    path: str
    role: str = "viewer"  # the least role that sees the entry


@dataclass(frozen=True)
class NavLink:
    label: str
    path: str
    active: bool


NAV = (
    NavItem("Dashboard", "/"),
    NavItem("Agents", "/agents"),
    NavItem("Jobs", "/jobs"),
    NavItem("Runs", "/runs"),
    NavItem("VMs & backups", "/vms"),
    NavItem("Repositories", "/repositories"),
    NavItem("Admin", "/admin", role="admin"),
)


def remember_pages(app: FastAPI, routers: Iterable[APIRouter]) -> None:
    """Called by web.install: the GET paths the UI serves."""
    app.state.ui_pages = frozenset(
        r.path
        for router in routers
        for r in router.routes
        if isinstance(r, Route) and r.methods is not None and "GET" in r.methods
    )


def nav_for(request: Request, actor: Actor) -> list[NavLink]:
    served: frozenset[str] = request.app.state.ui_pages
    here = request.url.path
    return [
        NavLink(
            item.label,
            item.path,
            here == item.path or (item.path != "/" and here.startswith(item.path + "/")),
        )
        for item in NAV
        if item.path in served and actor.allows(item.role)
    ]
