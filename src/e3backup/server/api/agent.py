"""The agent API (/api/agent/*): enroll, next_run, update_run, push_events, push_logs,
poll_commands, complete_command, report_vms, report_volumes, report_browse.

Authenticated by `X-Agent-ID` / `X-Agent-Token` (except enroll). Secrets appear only here, and
only for the agent the run or command belongs to.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from e3backup.server.db.models import Agent
from e3backup.server.deps import AgentCallDep, Ctx, CurrentAgent, Db, client_ip
from e3backup.server.schemas.agent import (
    CompleteCommand,
    EnrollAnswer,
    EnrollRequest,
    NextRunRequest,
    Ok,
    PollAnswer,
    PollCommandsAnswer,
    PollCommandsRequest,
    PollRequest,
    ReportBrowse,
    ReportVms,
    ReportVolumes,
)
from e3backup.server.schemas.runs import (
    PushEvents,
    PushEventsAnswer,
    PushLogs,
    RunUpdate,
    RunUpdateAnswer,
)
from e3backup.server.services import (
    agent_polls,
    agents,
    claims,
    commands,
    enrollment,
    events,
    runs,
    vms,
)
from e3backup.server.services.agent_gate import AgentRef
from e3backup.server.services.errors import Invalid, Unauthorized

router = APIRouter(prefix="/api/agent", tags=["agent"])


@router.post("/enroll", response_model=EnrollAnswer)
def enroll(body: EnrollRequest, request: Request, ctx: Ctx, db: Db) -> EnrollAnswer:
    key = f"enroll:{client_ip(request)}"
    ctx.limiter.check(key)
    who = enrollment.AgentIdentity(body.hostname, body.os, body.arch, body.version, body.device_id)
    try:
        if body.enrollment_token:
            agent, token = enrollment.enroll_with_token(db, body.enrollment_token, who)
        elif body.email and body.password is not None:
            agent, token = enrollment.enroll_with_password(db, body.email, body.password, who)
        else:
            raise Invalid("send enrollment_token, or email and password")
    except Unauthorized:
        ctx.limiter.failed(key)
        raise
    return EnrollAnswer(
        agent_id=agent.id,
        agent_token=token,
        tenant_id=agent.tenant_id,
        poll_interval_s=ctx.settings.agent_poll_interval_s,
    )


@router.post(
    "/next_run",
    responses={204: {"description": "nothing to run"}, 200: {"description": "NextRunResponse"}},
)
async def next_run(call: AgentCallDep, body: NextRunRequest | None = None) -> Any:
    settings = call.ctx.settings

    def work(db: Session, agent: Agent) -> Any:
        return claims.next_run(
            db,
            call.ctx.box,
            agent,
            settings.agent_reclaim_grace_s,
            settings.agent_watchdog_timeout_s,
        )

    def idle(conn: Connection, agent: AgentRef) -> Response | None:
        quiet = agent_polls.nothing_to_run(
            conn, agent.id, settings.agent_reclaim_grace_s, settings.agent_watchdog_timeout_s
        )
        return Response(status_code=204) if quiet else None

    payload = await call.run(work, idle)
    if payload is None:
        return Response(status_code=204)
    return payload


@router.post("/update_run", response_model=RunUpdateAnswer)
async def update_run(body: RunUpdate, call: AgentCallDep) -> RunUpdateAnswer:
    return await call.run(
        lambda db, agent: runs.apply_update(db, agent, body),
        lambda conn, agent: agent_polls.progress_update(conn, agent.id, body),
    )


@router.post("/push_events", response_model=PushEventsAnswer)
async def push_events(body: PushEvents, call: AgentCallDep) -> PushEventsAnswer:
    def own(conn: Connection, agent: AgentRef) -> PushEventsAnswer | None:
        if not agent_polls.owns_run(conn, agent.id, body.run_id):
            return None  # the full path answers 404
        accepted, duplicates = events.push_events(conn, body.run_id, body.events)
        return PushEventsAnswer(accepted=accepted, duplicates=duplicates)

    def work(db: Session, agent: Agent) -> PushEventsAnswer:
        run = runs.agent_run(db, agent, body.run_id)
        accepted, duplicates = events.push_events(db.connection(), run.id, body.events)
        return PushEventsAnswer(accepted=accepted, duplicates=duplicates)

    return await call.run(work, own)


@router.post("/push_logs", response_model=Ok)
def push_logs(body: PushLogs, agent: CurrentAgent, db: Db) -> Ok:
    events.push_logs(db, runs.agent_run(db, agent, body.run_id), body.lines)
    return Ok()


@router.post("/poll_commands", response_model=PollCommandsAnswer)
async def poll_commands(
    call: AgentCallDep, body: PollCommandsRequest | None = None
) -> PollCommandsAnswer:
    run_id = body.run_id if body else None
    answer = await call.run(
        lambda db, agent: commands.poll(db, call.ctx.box, agent, run_id),
        lambda conn, agent: agent_polls.idle_poll(conn, agent.id, run_id),
    )
    return PollCommandsAnswer(**answer)


@router.post("/poll", response_model=PollAnswer)
async def poll(call: AgentCallDep, body: PollRequest | None = None) -> PollAnswer:
    """next_run (when `claim`) and poll_commands in one call: what a polling agent needs.
    An idle agent costs one indexed statement; the old pair of calls keeps working."""
    request = body or PollRequest()
    settings = call.ctx.settings
    grace_s, watchdog_s = settings.agent_reclaim_grace_s, settings.agent_watchdog_timeout_s

    def work(db: Session, agent: Agent) -> dict[str, Any]:
        run = None
        if request.claim:
            run = claims.next_run(db, call.ctx.box, agent, grace_s, watchdog_s)
        return {"run": run, **commands.poll(db, call.ctx.box, agent, request.run_id)}

    def idle(conn: Connection, agent: AgentRef) -> dict[str, Any] | None:
        return agent_polls.idle_combined_poll(
            conn, call.ctx.gate, agent, request.run_id, request.claim, grace_s, watchdog_s
        )

    return PollAnswer(**await call.run(work, idle))


@router.post("/complete_command", response_model=Ok)
def complete_command(body: CompleteCommand, agent: CurrentAgent, db: Db) -> Ok:
    commands.complete(db, agent, body.command_id, body.status, body.result, body.error)
    return Ok()


@router.post("/report_vms", response_model=Ok)
def report_vms(body: ReportVms, agent: CurrentAgent, db: Db) -> Ok:
    count = vms.report_vms(db, agent, body.vms)
    if body.command_id is not None:
        commands.complete(db, agent, body.command_id, "completed", {"vm_count": count})
    return Ok()


@router.post("/report_volumes", response_model=Ok)
def report_volumes(body: ReportVolumes, agent: CurrentAgent, db: Db) -> Ok:
    agents.report_volumes(db, agent, body.volumes)
    return Ok()


@router.post("/report_browse", response_model=Ok)
def report_browse(body: ReportBrowse, agent: CurrentAgent, db: Db) -> Ok:
    result = {"path": body.path, "entries": body.entries, "error": body.error}
    status = "failed" if body.error else "completed"
    commands.complete(db, agent, body.command_id, status, result, body.error)
    return Ok()
