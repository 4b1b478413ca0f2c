"""Reads for the Jobs page and the job wizard: each job with its agent, its latest backup run
and its next run; the agents a job can be given; an agent's VM inventory with disks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from e3backup.server.db.base import utcnow
from e3backup.server.db.models import Agent, Job, Run, Vm, VmDisk
from e3backup.server.services import agents, jobs, scheduler, vms
from e3backup.server.services.auth import Actor

MAX_JOBS = 500


@dataclass(frozen=True)
class JobRow:
    job: Job
    agent: Agent | None
    last_run: Run | None
    next_run_at: datetime | None  # None: manual, disabled, or no agent


@dataclass(frozen=True)
class AgentChoice:
    agent: Agent
    online: bool


@dataclass(frozen=True)
class VmChoice:
    vm: Vm
    disks: list[VmDisk]


def latest_backup_runs(db: Session, job_ids: list[int]) -> dict[int, Run]:
    """The newest backup run of each job (one query for the ids, one for the rows)."""
    if not job_ids:
        return {}
    newest = (
        select(func.max(Run.id))
        .where(Run.job_id.in_(job_ids), Run.run_type == "backup")
        .group_by(Run.job_id)
    )
    rows = db.scalars(select(Run).where(Run.id.in_(newest)))
    return {run.job_id: run for run in rows if run.job_id is not None}


def _next_run(job: Job, now: datetime) -> datetime | None:
    if not job.enabled or job.agent_id is None:
        return None
    # the scheduler stores next_run_at on its next tick; until then the policy computes it
    return job.next_run_at or scheduler.next_run_at_for(job, now)


def job_rows(db: Session, actor: Actor) -> tuple[list[JobRow], int]:
    rows, total = jobs.list_jobs(db, actor, None, MAX_JOBS, 0)
    agent_ids = {j.agent_id for j in rows if j.agent_id is not None}
    by_id = {a.id: a for a in db.scalars(select(Agent).where(Agent.id.in_(agent_ids)))}
    last = latest_backup_runs(db, [j.id for j in rows])
    now = utcnow()
    return [
        JobRow(j, by_id.get(j.agent_id or 0), last.get(j.id), _next_run(j, now)) for j in rows
    ], total


def agent_choices(db: Session, actor: Actor, online_window_s: float) -> list[AgentChoice]:
    """Enabled agents the actor sees, online first (offline ones can still be chosen)."""
    rows, _ = agents.list_agents(db, actor, MAX_JOBS, 0)
    choices = [AgentChoice(a, agents.is_online(a, online_window_s)) for a in rows]
    return sorted(
        (c for c in choices if c.agent.status == "enabled"),
        key=lambda c: (not c.online, (c.agent.hostname or "").lower()),
    )


def vm_choices(db: Session, actor: Actor, agent_id: int, hypervisor: str) -> list[VmChoice]:
    """The VMs the agent last reported (present ones) for that hypervisor, by name."""
    agent = agents.get_agent(db, actor, agent_id)
    found = [vm for vm in vms.agent_vms(db, agent.id) if vm.present and vm.hypervisor == hypervisor]
    disks = vms.vm_disks(db, [vm.id for vm in found])
    return [VmChoice(vm, disks[vm.id]) for vm in sorted(found, key=lambda v: v.name.lower())]
