"""Agents: the list, enrollment tokens (shown once with the enroll command), disable and
delete behind the confirmation dialog, and how to install the agent."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form
from fastapi.responses import Response

from e3backup.server.schemas.common import IdPath
from e3backup.server.services import agents, enrollment
from e3backup.server.services.errors import Invalid
from e3backup.server.web.view import PageView, View

router = APIRouter(include_in_schema=False)
MAX_AGENTS_SHOWN = 500
TOKEN_LIFETIMES_S = {"1 hour": 3600, "24 hours": 86400, "7 days": 7 * 86400}


def _agents_page(page: View, **extra: Any) -> Response:
    rows, total = agents.list_agents(page.db, page.actor, MAX_AGENTS_SHOWN, 0)
    window = page.ctx.settings.agent_online_window_s
    return page.render(
        "agents.html",
        agents=[(a, agents.is_online(a, window)) for a in rows],
        total=total,
        lifetimes=TOKEN_LIFETIMES_S,
        new_token=extra.pop("new_token", None),
        **extra,
    )


@router.get("/agents")
def agents_page(page: PageView) -> Response:
    return _agents_page(page)


@router.post("/agents/tokens")
def create_token(
    page: PageView,
    expires_in_s: Annotated[int, Form(gt=0, le=30 * 86400)] = 86400,
    max_uses: Annotated[str, Form(max_length=10)] = "",
    description: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """The secret is in this answer only; htmx swaps just the token panel (hx-select)."""
    text = max_uses.strip()
    if text and not text.isdigit():
        raise Invalid("max uses must be a whole number (or empty for no limit)", "max_uses")
    uses = int(text) if text else None
    token, secret = enrollment.issue_token(
        page.db, page.actor, None, expires_in_s, uses, description.strip()
    )
    command = f"e3backup agent enroll --server {page.server_url} --token {secret}"
    return _agents_page(page, new_token={"token": token, "secret": secret, "command": command})


@router.post("/agents/{agent_id}/disable")
def disable(agent_id: IdPath, page: PageView) -> Response:
    agent = agents.disable_agent(page.db, page.actor, agent_id)
    page.db.commit()  # before the cache forgets it, so no request re-caches the old row
    page.ctx.gate.invalidate(agent_id)
    return page.redirect("/agents", f"Agent {agent.hostname or agent_id} disabled.")


@router.post("/agents/{agent_id}/delete")
def delete(agent_id: IdPath, page: PageView) -> Response:
    agents.delete_agent(page.db, page.actor, agent_id)
    page.db.commit()
    page.ctx.gate.invalidate(agent_id)
    return page.redirect("/agents", "Agent deleted.")
