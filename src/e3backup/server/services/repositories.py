"""Repositories as the server knows them: one per job destination (local path, or S3 endpoint +
bucket + prefix), with the newest statistics agents reported after runs and maintenance, the
last check, and the maintenance commands (check, full maintenance) queued to a job's agent.

The server never opens a repository: everything here is what agents reported.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from e3backup.server.crypto import SecretBox
from e3backup.server.db.models import Agent, Command, Job, Run
from e3backup.server.db.models.commands import OPEN_COMMAND_STATUSES
from e3backup.server.services import agents, audit, commands, jobs
from e3backup.server.services.auth import Actor
from e3backup.server.services.errors import Conflict, Invalid, NotFound

MAINTENANCE_KINDS = ("quick", "full")
MAINTENANCE_TYPES = tuple(f"maintenance_{k}" for k in MAINTENANCE_KINDS)
REPORT_SCAN_LIMIT = 500  # newest run reports and maintenance commands looked at
MAX_SOURCES_SHOWN = 50


@dataclass(frozen=True)
class SourceStats:
    """One source's snapshots in a repository (`sources` of an agent's repository_stats)."""

    name: str
    snapshots: int
    newest_at: datetime | None = None
    logical_bytes: int | None = None


@dataclass
class Repository:
    key: str  # stable short id of the destination (page anchors and fragment routes)
    dest_type: str
    repository: str  # local path or s3://bucket/prefix
    endpoint: str = ""  # S3 endpoint without credentials
    jobs: list[Job] = field(default_factory=list)
    size_bytes: int | None = None
    logical_bytes: int | None = None
    snapshot_count: int | None = None
    dedup_ratio: float | None = None
    reported_at: datetime | None = None
    sources: list[SourceStats] | None = None  # None: not reported (an older agent)
    last_check: Command | None = None
    open_command: Command | None = None

    @property
    def job_names(self) -> list[str]:
        return [j.name for j in self.jobs]

    @property
    def savings_bytes(self) -> int | None:
        if self.size_bytes is None or self.logical_bytes is None:
            return None
        return max(self.logical_bytes - self.size_bytes, 0)

    @property
    def maintenance_job(self) -> Job | None:
        """The job whose agent runs this repository's maintenance (the first with an agent)."""
        return next((j for j in self.jobs if j.agent_id is not None), None)


def public_endpoint(endpoint: str) -> str:
    """The endpoint without any user:password part (never shown, never a key)."""
    parts = urlsplit(endpoint)
    if not parts.netloc or "@" not in parts.netloc:
        return endpoint
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def destination_label(job: Job) -> str:
    """Where a job writes, for people: the path, or endpoint + s3://bucket/prefix."""
    url = jobs.repository_url(job)
    endpoint = public_endpoint(job.dest_endpoint) if job.dest_type == "s3" else ""
    return f"{endpoint} {url}" if endpoint else url


def repository_key(job: Job) -> str:
    raw = "\x00".join((job.dest_type, public_endpoint(job.dest_endpoint), jobs.repository_url(job)))
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


def _live_jobs(db: Session, actor: Actor) -> list[Job]:
    where = [Job.tenant_id.in_(actor.tenant_ids), Job.deleted_at.is_(None)]
    return list(db.scalars(select(Job).where(*where).order_by(Job.id)))


def _reports(db: Session, actor: Actor) -> list[tuple[int, datetime, dict[str, Any]]]:
    """(job id, when, repository_stats) from finished runs and completed maintenance."""
    runs = db.execute(
        select(Run.job_id, Run.finished_at, Run.stats_json)
        .where(Run.tenant_id.in_(actor.tenant_ids), Run.stats_json.is_not(None))
        .order_by(Run.id.desc())
        .limit(REPORT_SCAN_LIMIT)
    ).all()
    out = [(j, t, s) for j, t, s in runs if j is not None and t and isinstance(s, dict)]
    for command in _maintenance_commands(db, actor):
        result = command.result_json
        stats = result.get("repository_stats") if isinstance(result, dict) else None
        if command.job_id is not None and command.completed_at and isinstance(stats, dict):
            out.append((command.job_id, command.completed_at, stats))
    return out


def _maintenance_commands(db: Session, actor: Actor) -> list[Command]:
    return list(
        db.scalars(
            select(Command)
            .where(Command.tenant_id.in_(actor.tenant_ids), Command.type.in_(MAINTENANCE_TYPES))
            .order_by(Command.id.desc())
            .limit(REPORT_SCAN_LIMIT)
        )
    )


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _sources(value: Any) -> list[SourceStats] | None:
    if not isinstance(value, list):
        return None
    out = []
    for item in value[:MAX_SOURCES_SHOWN]:
        if isinstance(item, dict):
            out.append(
                SourceStats(
                    name=str(item.get("source_name") or item.get("source_id") or "?")[:500],
                    snapshots=_int_or_none(item.get("snapshots")) or 0,
                    newest_at=_parse_time(item.get("newest_at")),
                    logical_bytes=_int_or_none(item.get("logical_bytes")),
                )
            )
    return out


def _apply_stats(row: Repository, at: datetime, stats: dict[str, Any]) -> None:
    row.reported_at = at
    row.size_bytes = _int_or_none(stats.get("size_bytes"))
    row.logical_bytes = _int_or_none(stats.get("logical_bytes"))
    row.snapshot_count = _int_or_none(stats.get("snapshot_count"))
    ratio = stats.get("dedup_ratio")
    row.dedup_ratio = float(ratio) if isinstance(ratio, int | float) else None
    row.sources = _sources(stats.get("sources"))


def list_repositories(db: Session, actor: Actor) -> list[Repository]:
    """One entry per destination of the actor's live jobs, with its newest reported
    statistics, its last finished check and any maintenance command still open."""
    by_job: dict[int, Repository] = {}
    rows: dict[str, Repository] = {}
    for job in _live_jobs(db, actor):
        key = repository_key(job)
        if key not in rows:
            endpoint = public_endpoint(job.dest_endpoint) if job.dest_type == "s3" else ""
            rows[key] = Repository(key, job.dest_type, jobs.repository_url(job), endpoint)
        row = rows[key]
        row.jobs.append(job)
        by_job[job.id] = row
    for job_id, at, stats in _reports(db, actor):
        reported = by_job.get(job_id)
        if reported is not None and (reported.reported_at is None or reported.reported_at < at):
            _apply_stats(reported, at, stats)
    for command in _maintenance_commands(db, actor):  # newest first
        owner = by_job.get(command.job_id) if command.job_id is not None else None
        if owner is None:
            continue
        if command.status in OPEN_COMMAND_STATUSES and owner.open_command is None:
            owner.open_command = command
        elif command.status in ("completed", "failed") and owner.last_check is None:
            owner.last_check = command
    return sorted(rows.values(), key=lambda r: (r.repository, r.endpoint))


def get_repository(db: Session, actor: Actor, key: str) -> Repository:
    found = next((r for r in list_repositories(db, actor) if r.key == key), None)
    if found is None:
        raise NotFound(f"repository {key} not found")
    return found


def open_maintenance(db: Session, job: Job) -> Command | None:
    return db.scalar(
        select(Command)
        .where(
            Command.job_id == job.id,
            Command.type.in_(MAINTENANCE_TYPES),
            Command.status.in_(OPEN_COMMAND_STATUSES),
        )
        .order_by(Command.id.desc())
        .limit(1)
    )


def queue_maintenance(
    db: Session, box: SecretBox, actor: Actor, job_id: int, kind: str, ttl_s: float
) -> Command:
    """maintenance_quick (check) or maintenance_full (check with a read-data subset, forget by
    the job's retention, prune), run by the job's agent. One open at a time per job."""
    actor.require("operator")
    if kind not in MAINTENANCE_KINDS:
        raise Invalid(f"kind must be one of {', '.join(MAINTENANCE_KINDS)}", "kind")
    job = jobs.get_job(db, actor, job_id)
    if job.agent_id is None:
        raise Conflict(f"job {job_id} has no agent")
    agent: Agent = agents.get_agent(db, actor, job.agent_id)
    pending = open_maintenance(db, job)
    if pending is not None:
        raise Conflict(
            f"maintenance command {pending.id} for job {job_id} is still {pending.status}; "
            "wait for it to finish"
        )
    command = commands.enqueue(
        db,
        box,
        agent=agent,
        type=f"maintenance_{kind}",
        job_id=job.id,
        user_id=actor.user_id,
        ttl_s=ttl_s,
    )
    audit.record(db, actor, f"job.maintenance_{kind}", "job", job.id, job.tenant_id)
    return command
