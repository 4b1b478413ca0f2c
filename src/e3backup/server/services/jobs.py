"""Jobs: create, read, update, delete with cross-field validation, and the decrypted
destination/secret view that only the owning agent ever receives."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from e3backup.server import scheduling
from e3backup.server.crypto import SecretBox
from e3backup.server.db.base import utcnow
from e3backup.server.db.models import Agent, Job
from e3backup.server.db.models.jobs import VM_ENGINES
from e3backup.server.schemas.jobs import JobCreate, JobOut, JobUpdate, ScheduleSpec
from e3backup.server.services import audit, notify_settings
from e3backup.server.services.auth import Actor
from e3backup.server.services.errors import Invalid, NotFound

# write-only field → encrypted column
SECRET_COLUMNS = {
    "access_key": "dest_access_key_enc",
    "secret_key": "dest_secret_key_enc",
    "repository_password": "repository_password_enc",
    "network_username": "network_username_enc",
    "network_password": "network_password_enc",
}
# wire field → column, where the names differ
_RENAMED = {"source_paths": "source_paths_json", "vm_config": "vm_config_json", "vms": "vms_json"}
_RENAMED["notify"] = "notify_json"
_JSON_SPECS = ("schedule_json", "retention_json", "policy_json", "vm_config", "notify")


def _secret_context(column: str) -> str:
    return f"jobs.{column}"


def validate_schedule(schedule: ScheduleSpec) -> None:
    """The scheduler's own parser decides (server/scheduling.py): what saves, schedules."""
    try:
        scheduling.parse_schedule(schedule.model_dump())
    except scheduling.ScheduleError as exc:
        raise Invalid(str(exc), exc.field) from None


def _validate_timezone(name: str) -> ZoneInfo:
    try:
        return scheduling.parse_timezone(name)
    except scheduling.ScheduleError as exc:
        raise Invalid(exc.message, exc.field) from None


def schedule_preview(
    schedule: ScheduleSpec, timezone: str, now: datetime, n: int = 5
) -> list[datetime]:
    """The next `n` times a job with this schedule would run (the scheduler's own policy), in
    the job's zone; empty for a manual schedule. Invalid names the offending field."""
    zone = _validate_timezone(timezone)
    try:
        parsed = scheduling.parse_schedule(schedule.model_dump())
    except scheduling.ScheduleError as exc:
        raise Invalid(str(exc), exc.field) from None
    return scheduling.preview(parsed, zone, now, n)


def _visible_agent(db: Session, actor: Actor, agent_id: int) -> Agent:
    agent = db.get(Agent, agent_id)
    if agent is None or not actor.sees(agent.tenant_id):
        raise Invalid(f"agent {agent_id} not found", "agent_id")
    return agent


def _validate_job(job: Job) -> None:
    """Rules spanning fields, checked on the stored shape after a create or an update."""
    if not job.repository_password_enc:
        raise Invalid(
            "a job needs repository_password: the repository's key is encrypted with it "
            "(a new repository is created with it, an existing one opened)",
            "repository_password",
        )
    if job.dest_type == "local" and not job.dest_local_path:
        raise Invalid("a local destination needs dest_local_path", "dest_local_path")
    if job.dest_type == "s3" and not job.dest_bucket:
        raise Invalid("an s3 destination needs dest_bucket", "dest_bucket")
    if job.engine in VM_ENGINES and not job.vms_json:
        raise Invalid(f"a {job.engine} job needs at least one VM in vms", "vms")
    if job.engine == "disk_image" and not (job.disk_source_volume or job.source_path):
        raise Invalid("a disk_image job needs disk_source_volume (or source_path)")
    if job.engine in ("files", "sync") and not (job.source_path or job.source_paths_json):
        raise Invalid(f"a {job.engine} job needs source_path or source_paths", "source_paths")
    if job.schedule_json is not None:
        validate_schedule(ScheduleSpec.model_validate(job.schedule_json))
    _validate_timezone(job.timezone)


def _apply(
    db: Session, box: SecretBox, job: Job, fields: dict[str, Any], allow_private_targets: bool
) -> list[str]:
    """Copy wire fields onto the row (secrets sealed); the names of the changed fields."""
    changed = []
    for name, value in fields.items():
        if name in SECRET_COLUMNS:
            column = SECRET_COLUMNS[name]
            setattr(job, column, box.seal_optional(value, _secret_context(column)))
        elif name == "notify":
            job.notify_json = notify_settings.seal(
                value, job.notify_json, box, allow_private_targets
            )
        else:
            setattr(job, _RENAMED.get(name, name), value)
        changed.append(name)
    if "source_paths" in fields and fields["source_paths"] and not job.source_path:
        job.source_path = fields["source_paths"][0]  # seed: first entry for compatibility
    return changed


def _dump(spec: JobCreate | JobUpdate) -> dict[str, Any]:
    doc = spec.model_dump(exclude_unset=isinstance(spec, JobUpdate))
    for name in _JSON_SPECS:
        if name in doc and doc[name] is not None:
            doc[name] = dict(doc[name])
    return doc


def create_job(
    db: Session,
    box: SecretBox,
    actor: Actor,
    spec: JobCreate,
    *,
    allow_private_targets: bool = False,
) -> Job:
    actor.require("admin")
    agent = _visible_agent(db, actor, spec.agent_id)
    job = Job(tenant_id=agent.tenant_id)
    _apply(db, box, job, _dump(spec), allow_private_targets)
    _validate_job(job)
    db.add(job)
    db.flush()
    audit.record(db, actor, "job.create", "job", job.id, job.tenant_id, {"name": job.name})
    return job


def get_job(db: Session, actor: Actor, job_id: int) -> Job:
    job = db.get(Job, job_id)
    if job is None or job.deleted_at is not None or not actor.sees(job.tenant_id):
        raise NotFound(f"job {job_id} not found")
    return job


def update_job(
    db: Session,
    box: SecretBox,
    actor: Actor,
    job_id: int,
    spec: JobUpdate,
    *,
    allow_private_targets: bool = False,
) -> Job:
    actor.require("admin")
    job = get_job(db, actor, job_id)
    fields = _dump(spec)
    if fields.get("agent_id") is not None:
        agent = _visible_agent(db, actor, fields["agent_id"])
        if agent.tenant_id != job.tenant_id:
            raise Invalid("the agent belongs to another tenant than the job", "agent_id")
    for name in ("name", "engine", "dest_type", "agent_id", "timezone", "enabled"):
        if name in fields and fields[name] is None:
            raise Invalid(f"{name} cannot be null", name)
    changed = _apply(db, box, job, fields, allow_private_targets)
    _validate_job(job)
    if "schedule_json" in fields or "timezone" in fields:
        job.next_run_at = None  # the scheduler recomputes it
    db.flush()
    audit.record(db, actor, "job.update", "job", job.id, job.tenant_id, {"fields": changed})
    return job


def delete_job(db: Session, actor: Actor, job_id: int) -> None:
    """Soft delete: the job disappears from lists; its runs and backup points stay."""
    actor.require("admin")
    job = get_job(db, actor, job_id)
    job.deleted_at = utcnow()
    job.enabled = False
    audit.record(db, actor, "job.delete", "job", job.id, job.tenant_id, {"name": job.name})


def list_jobs(
    db: Session, actor: Actor, agent_id: int | None, limit: int, offset: int
) -> tuple[list[Job], int]:
    where: list[Any] = [Job.tenant_id.in_(actor.tenant_ids), Job.deleted_at.is_(None)]
    if agent_id is not None:
        where.append(Job.agent_id == agent_id)
    total = db.scalar(select(func.count()).select_from(Job).where(*where)) or 0
    rows = db.scalars(select(Job).where(*where).order_by(Job.id).limit(limit).offset(offset))
    return list(rows), total


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id,
        tenant_id=job.tenant_id,
        agent_id=job.agent_id,
        name=job.name,
        engine=job.engine,
        source_path=job.source_path,
        source_paths=list(job.source_paths_json or []),
        disk_source_volume=job.disk_source_volume,
        disk_image_format=job.disk_image_format,
        disk_temp_dir=job.disk_temp_dir,
        vm_config=job.vm_config_json,
        vms=list(job.vms_json or []),
        network_domain=job.network_domain,
        has_network_credentials=job.network_password_enc is not None,
        dest_type=job.dest_type,
        dest_local_path=job.dest_local_path,
        dest_bucket=job.dest_bucket,
        dest_prefix=job.dest_prefix,
        dest_endpoint=job.dest_endpoint,
        dest_region=job.dest_region,
        bucket_auto_create=job.bucket_auto_create,
        has_access_key=job.dest_access_key_enc is not None,
        has_secret_key=job.dest_secret_key_enc is not None,
        has_repository_password=job.repository_password_enc is not None,
        schedule_json=job.schedule_json,
        retention_json=job.retention_json,
        policy_json=job.policy_json,
        timezone=job.timezone,
        enabled=job.enabled,
        notify=notify_settings.public(job.notify_json),
        next_run_at=job.next_run_at,
        last_slot_at=job.last_slot_at,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


def repository_url(job: Job) -> str:
    if job.dest_type == "local":
        return job.dest_local_path
    prefix = job.dest_prefix.strip("/")
    return f"s3://{job.dest_bucket}/{prefix}" if prefix else f"s3://{job.dest_bucket}"


def agent_job_context(box: SecretBox, job: Job) -> dict[str, Any]:
    """Everything an agent needs to run or restore this job, secrets decrypted.

    Only for the agent API (next_run, command payloads) — never for a client answer or a log.
    """

    def secret(column: str) -> str | None:
        return box.open_optional(getattr(job, column), _secret_context(column))

    network = None
    if job.network_password_enc is not None:
        network = {
            "username": secret("network_username_enc") or "",
            "password": secret("network_password_enc") or "",
            "domain": job.network_domain,
        }
    policy = dict(job.policy_json or {})
    return {
        "job_id": job.id,
        "job_name": job.name,
        "engine": job.engine,
        "source_path": job.source_path,
        "source_paths": list(job.source_paths_json or []),
        "disk_source_volume": job.disk_source_volume,
        "disk_image_format": job.disk_image_format,
        "disk_temp_dir": job.disk_temp_dir,
        "network_credentials": network,
        "dest_type": job.dest_type,
        "repository": repository_url(job),
        "dest_local_path": job.dest_local_path,
        "dest_bucket": job.dest_bucket,
        "dest_prefix": job.dest_prefix,
        "dest_endpoint": job.dest_endpoint,
        "dest_region": job.dest_region,
        "bucket_auto_create": job.bucket_auto_create,
        "dest_access_key": secret("dest_access_key_enc"),
        "dest_secret_key": secret("dest_secret_key_enc"),
        "repository_password": secret("repository_password_enc"),
        "policy_json": policy,
        "compression_enabled": policy.get("compression", "zstd") != "none",
        "schedule_json": job.schedule_json,
        "retention_json": job.retention_json,
        "vm_config": job.vm_config_json,
        "timezone": job.timezone,
    }
