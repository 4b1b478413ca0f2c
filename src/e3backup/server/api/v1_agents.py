"""Client API: agents (list, detail with volumes and VMs, disable, delete), commands to them
(browse, VM inventory refresh) and command status."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from e3backup.server.db.models import Agent, Command
from e3backup.server.deps import Ctx, CurrentActor, Db
from e3backup.server.schemas.agent import Ok
from e3backup.server.schemas.client import (
    AgentDetail,
    AgentOut,
    BrowseRequest,
    CommandOut,
    VmDiskOut,
    VmOut,
)
from e3backup.server.schemas.commands import (
    NasMountRequest,
    NasUnmountRequest,
    TestDestinationRequest,
)
from e3backup.server.schemas.common import IdPath, OffsetQuery, Page
from e3backup.server.services import agents, remote_commands, vms

router = APIRouter(prefix="/api/v1", tags=["agents"])
BROWSE_POLL_S = 0.25


def agent_out(agent: Agent, online_window_s: float) -> AgentOut:
    return AgentOut.model_validate(
        {
            **{c: getattr(agent, c) for c in AgentOut.model_fields if c != "online"},
            "online": agents.is_online(agent, online_window_s),
        }
    )


@router.get("/agents", response_model=Page[AgentOut])
def list_agents(
    actor: CurrentActor,
    ctx: Ctx,
    db: Db,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: OffsetQuery = 0,
) -> Page[AgentOut]:
    rows, total = agents.list_agents(db, actor, limit, offset)
    window = ctx.settings.agent_online_window_s
    return Page(items=[agent_out(a, window) for a in rows], total=total, limit=limit, offset=offset)


@router.get("/agents/{agent_id}", response_model=AgentDetail)
def get_agent(agent_id: IdPath, actor: CurrentActor, ctx: Ctx, db: Db) -> AgentDetail:
    agent = agents.get_agent(db, actor, agent_id)
    rows = vms.agent_vms(db, agent.id)
    disks = vms.vm_disks(db, [vm.id for vm in rows])
    vm_out = [
        VmOut.model_validate(vm).model_copy(
            update={"disks": [VmDiskOut.model_validate(d) for d in disks[vm.id]]}
        )
        for vm in rows
    ]
    base = agent_out(agent, ctx.settings.agent_online_window_s)
    return AgentDetail(
        **base.model_dump(),
        volumes=list(agent.volumes_json or []),
        volumes_reported_at=agent.volumes_reported_at,
        vms=vm_out,
    )


@router.post("/agents/{agent_id}/disable", response_model=AgentOut)
def disable_agent(agent_id: IdPath, actor: CurrentActor, ctx: Ctx, db: Db) -> AgentOut:
    agent = agents.disable_agent(db, actor, agent_id)
    db.commit()  # before the cache forgets it, so no request re-caches the old row
    ctx.gate.invalidate(agent_id)
    return agent_out(agent, ctx.settings.agent_online_window_s)


@router.delete("/agents/{agent_id}", response_model=Ok)
def delete_agent(agent_id: IdPath, actor: CurrentActor, ctx: Ctx, db: Db) -> Ok:
    agents.delete_agent(db, actor, agent_id)
    db.commit()  # before the cache forgets it, so no request re-caches the old row
    ctx.gate.invalidate(agent_id)
    return Ok(status="success")


@router.post("/agents/{agent_id}/refresh_vms", response_model=CommandOut, status_code=202)
def refresh_vms(agent_id: IdPath, actor: CurrentActor, ctx: Ctx, db: Db) -> CommandOut:
    command = remote_commands.queue_list_vms(db, ctx.box, actor, agent_id)
    return CommandOut.model_validate(command)


@router.post("/agents/{agent_id}/browse", responses={202: {"model": CommandOut}})
def browse(
    agent_id: IdPath, body: BrowseRequest, actor: CurrentActor, ctx: Ctx, db: Db
) -> JSONResponse:
    """Queue browse_directory and wait up to `wait_s` (≤ 30 s) for the agent's answer; 202
    with the command to follow when it has not answered yet."""
    command = remote_commands.queue_browse(db, ctx.box, actor, agent_id, body.path)
    return _answer_or_202(db, command, min(body.wait_s, ctx.settings.browse_wait_s))


def _answer_or_202(db: Session, command: Command, wait_s: float) -> JSONResponse:
    """Commit the queued command, then wait up to `wait_s` for the agent's answer: 200 with
    the completed command, or 202 with the command to follow."""
    db.commit()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(BROWSE_POLL_S)
        db.expire_all()
        current = db.get_one(Command, command.id)
        if current.status in ("completed", "failed"):
            return JSONResponse(CommandOut.model_validate(current).model_dump(mode="json"))
    return JSONResponse(CommandOut.model_validate(command).model_dump(mode="json"), status_code=202)


@router.post(
    "/agents/{agent_id}/test_destination",
    response_model=CommandOut,
    responses={202: {"model": CommandOut, "description": "the agent has not answered yet"}},
)
def test_destination(
    agent_id: IdPath, body: TestDestinationRequest, actor: CurrentActor, ctx: Ctx, db: Db
) -> JSONResponse:
    """Queue test_destination (secrets sealed in the command) and wait up to `wait_s`."""
    command = remote_commands.queue_test_destination(db, ctx.box, actor, agent_id, body)
    return _answer_or_202(db, command, min(body.wait_s, ctx.settings.browse_wait_s))


@router.post("/agents/{agent_id}/nas_mount", response_model=CommandOut, status_code=202)
def nas_mount(
    agent_id: IdPath, body: NasMountRequest, actor: CurrentActor, ctx: Ctx, db: Db
) -> CommandOut:
    """Queue nas_mount; the command's id is the mount_id that nas_unmount takes."""
    command = remote_commands.queue_nas_mount(db, ctx.box, actor, agent_id, body)
    return CommandOut.model_validate(command)


@router.post("/agents/{agent_id}/nas_unmount", response_model=CommandOut, status_code=202)
def nas_unmount(
    agent_id: IdPath, body: NasUnmountRequest, actor: CurrentActor, ctx: Ctx, db: Db
) -> CommandOut:
    command = remote_commands.queue_nas_unmount(db, ctx.box, actor, agent_id, body)
    return CommandOut.model_validate(command)


@router.get("/commands/{command_id}", response_model=CommandOut)
def get_command(command_id: IdPath, actor: CurrentActor, db: Db) -> CommandOut:
    return CommandOut.model_validate(remote_commands.get_command(db, actor, command_id))
