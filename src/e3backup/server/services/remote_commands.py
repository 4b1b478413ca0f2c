"""Commands a user sends to an agent beside runs: browse_directory and list_vms (the job
wizard's browsers), test_destination (probe a destination before saving a job), nas_mount /
nas_unmount (seed 002 Cloud NAS). Validated here; secrets travel
sealed in the command and are opened only when the owning agent receives it."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from sqlalchemy.orm import Session

from e3backup.server.crypto import SecretBox
from e3backup.server.db.models import Agent, Command, Job
from e3backup.server.schemas.commands import (
    NasMountRequest,
    NasUnmountRequest,
    TestDestinationRequest,
)
from e3backup.server.services import agents, audit, commands, jobs
from e3backup.server.services.auth import Actor
from e3backup.server.services.errors import Conflict, Invalid, NotFound

DESTINATION_FIELDS = (
    "dest_type",
    "dest_local_path",
    "dest_bucket",
    "dest_prefix",
    "dest_endpoint",
    "dest_region",
    "bucket_auto_create",
)
# request field → the job context name the agent reads
DESTINATION_SECRETS = {
    "access_key": "dest_access_key",
    "secret_key": "dest_secret_key",
    "repository_password": "repository_password",
}
TEST_DESTINATION_TTL_S = 300.0
BROWSE_TTL_S = 120.0


def get_command(db: Session, actor: Actor, command_id: int) -> Command:
    """A command of a tenant the actor sees (to follow it until the agent answers)."""
    command = db.get(Command, command_id)
    if command is None or not actor.sees(command.tenant_id):
        raise NotFound(f"command {command_id} not found")
    return command


def queue_browse(db: Session, box: SecretBox, actor: Actor, agent_id: int, path: str) -> Command:
    """browse_directory: one directory of the agent's host (the drives/roots for "")."""
    actor.require("operator")
    agent = agents.get_agent(db, actor, agent_id)
    command = commands.enqueue(
        db,
        box,
        agent=agent,
        type="browse_directory",
        payload={"path": path},
        user_id=actor.user_id,
        ttl_s=BROWSE_TTL_S,
    )
    audit.record(db, actor, "agent.browse", "agent", agent.id, agent.tenant_id)
    return command


def queue_list_vms(db: Session, box: SecretBox, actor: Actor, agent_id: int) -> Command:
    """list_vms: the agent answers with report_vms (its inventory replaces the stored one)."""
    actor.require("operator")
    agent = agents.get_agent(db, actor, agent_id)
    return commands.enqueue(db, box, agent=agent, type="list_vms", user_id=actor.user_id)


def _saved_destination(job: Job | None) -> dict[str, Any]:
    return {name: getattr(job, name) for name in DESTINATION_FIELDS} if job else {}


def _check_destination(dest: dict[str, Any]) -> None:
    kind = dest.get("dest_type")
    if kind is None:
        raise Invalid("dest_type is required (local or s3), or a job_id to test", "dest_type")
    if kind == "local" and not dest.get("dest_local_path"):
        raise Invalid("a local destination needs dest_local_path", "dest_local_path")
    if kind == "s3" and not dest.get("dest_bucket"):
        raise Invalid("an s3 destination needs dest_bucket", "dest_bucket")


def queue_test_destination(
    db: Session, box: SecretBox, actor: Actor, agent_id: int, req: TestDestinationRequest
) -> Command:
    actor.require("operator")
    agent = agents.get_agent(db, actor, agent_id)
    job = jobs.get_job(db, actor, req.job_id) if req.job_id is not None else None
    if job is not None and job.tenant_id != agent.tenant_id:
        raise Invalid("the job belongs to another tenant than the agent", "job_id")
    sent = req.model_dump(exclude_unset=True)
    destination = {n: sent[n] for n in DESTINATION_FIELDS if sent.get(n) is not None}
    _check_destination({**_saved_destination(job), **destination})
    secrets = {wire: sent[n] for n, wire in DESTINATION_SECRETS.items() if sent.get(n) is not None}
    command = commands.enqueue(
        db,
        box,
        agent=agent,
        type="test_destination",
        payload=destination,
        job_id=job.id if job else None,
        secrets=secrets or None,
        user_id=actor.user_id,
        ttl_s=TEST_DESTINATION_TTL_S,
    )
    audit.record(db, actor, "agent.test_destination", "agent", agent.id, agent.tenant_id)
    return command


def _is_windows(agent: Agent) -> bool:
    return agent.os.lower().startswith("win")


def _mount_target(agent: Agent, req: NasMountRequest) -> dict[str, str | None]:
    if (req.drive_letter is None) == (req.mount_point is None):
        raise Invalid("send either drive_letter (Windows) or mount_point (a directory)")
    if req.drive_letter is not None and not _is_windows(agent):
        raise Invalid(
            "drive letters exist only on Windows agents; send mount_point", "drive_letter"
        )
    if req.mount_point is not None:
        if _is_windows(agent):
            raise Invalid("a Windows agent mounts on a drive_letter", "mount_point")
        if ".." in PurePosixPath(req.mount_point).parts or "\x00" in req.mount_point:
            raise Invalid("mount_point must be an absolute path without '..'", "mount_point")
    letter = req.drive_letter.upper() if req.drive_letter else None
    return {"drive_letter": letter, "mount_point": req.mount_point}


def queue_nas_mount(
    db: Session, box: SecretBox, actor: Actor, agent_id: int, req: NasMountRequest
) -> Command:
    """The command's id is the mount's id (seed `mount_id`), used to unmount it later."""
    actor.require("admin")
    agent = agents.get_agent(db, actor, agent_id)
    payload: dict[str, Any] = {
        **req.model_dump(exclude={"access_key", "secret_key", "drive_letter", "mount_point"}),
        **_mount_target(agent, req),
    }
    command = commands.enqueue(
        db,
        box,
        agent=agent,
        type="nas_mount",
        payload=payload,
        secrets={"access_key": req.access_key, "secret_key": req.secret_key},
        user_id=actor.user_id,
    )
    command.payload_json = {"mount_id": command.id, **payload}
    audit.record(
        db, actor, "agent.nas_mount", "agent", agent.id, agent.tenant_id, {"bucket": req.bucket}
    )
    return command


def queue_nas_unmount(
    db: Session, box: SecretBox, actor: Actor, agent_id: int, req: NasUnmountRequest
) -> Command:
    actor.require("admin")
    agent = agents.get_agent(db, actor, agent_id)
    mount = db.get(Command, req.mount_id)
    if mount is None or mount.agent_id != agent.id or mount.type != "nas_mount":
        raise NotFound(f"mount {req.mount_id} not found on agent {agent.id}")
    if mount.status in ("failed", "expired"):
        raise Conflict(f"mount {req.mount_id} {mount.status}; there is nothing to unmount")
    mounted = dict(mount.payload_json or {})
    payload = {k: mounted.get(k) for k in ("mount_id", "drive_letter", "mount_point", "bucket")}
    command = commands.enqueue(
        db, box, agent=agent, type="nas_unmount", payload=payload, user_id=actor.user_id
    )
    audit.record(
        db, actor, "agent.nas_unmount", "agent", agent.id, agent.tenant_id, {"mount_id": mount.id}
    )
    return command
