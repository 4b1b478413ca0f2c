"""Client requests that become agent commands: test a destination, mount and unmount a bucket
as a drive (seed 002 Cloud NAS `MountNASPayload` names)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from e3backup.server.schemas.common import Id, WriteModel
from e3backup.server.schemas.jobs import DestType

MAX_WAIT_S = 30.0


class TestDestinationRequest(WriteModel):
    """A destination to probe, in the job's field names. With `job_id`, the job's saved
    destination (and its secrets) fills every field not sent."""

    __test__ = False  # not a pytest class, despite the name

    job_id: Id | None = None
    dest_type: DestType | None = None
    dest_local_path: str | None = Field(default=None, max_length=2000)
    dest_bucket: str | None = Field(default=None, max_length=255)
    dest_prefix: str | None = Field(default=None, max_length=1000)
    dest_endpoint: str | None = Field(default=None, max_length=1000)
    dest_region: str | None = Field(default=None, max_length=100)
    bucket_auto_create: bool | None = None
    access_key: str | None = Field(default=None, max_length=1000)
    secret_key: str | None = Field(default=None, max_length=1000)
    repository_password: str | None = Field(default=None, max_length=1000)
    wait_s: float = Field(default=MAX_WAIT_S, ge=0, le=MAX_WAIT_S)


class NasMountRequest(WriteModel):
    """Mount `bucket/prefix` on the agent's host as a drive letter (Windows) or a directory."""

    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$")
    prefix: str = Field(default="", max_length=1024)
    drive_letter: str | None = Field(default=None, pattern=r"^[A-Za-z]$")
    mount_point: str | None = Field(default=None, min_length=2, max_length=1000, pattern=r"^/")
    read_only: bool = False
    persistent: bool = False
    cache_mode: Literal["off", "minimal", "writes", "full"] = "full"
    endpoint: str = Field(default="", max_length=1000)
    region: str = Field(default="", max_length=100)
    access_key: str = Field(min_length=1, max_length=1000)
    secret_key: str = Field(min_length=1, max_length=1000)


class NasUnmountRequest(WriteModel):
    """Unmount by the mount's id (the id of the nas_mount command that created it)."""

    mount_id: Id
