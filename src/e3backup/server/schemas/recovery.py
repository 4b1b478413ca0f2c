"""Recovery session wire models (seed 003): the token answer and what its endpoints return."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from e3backup.server.schemas.common import Id, WriteModel
from e3backup.server.schemas.runs import RunOut


class RecoverySessionOut(BaseModel):
    """`session_token` is shown once; the server keeps only its hash."""

    session_token: str
    run_id: Id
    session_expires_at: datetime


class RecoveryRunRef(WriteModel):
    run_id: Id


class RecoverySessionState(BaseModel):
    run_id: Id
    session_expires_at: datetime


class RecoveryRunStatus(RecoverySessionState):
    run: RunOut


class RecoveryCancelState(RecoverySessionState):
    status: str
    cancel_requested: bool


class RecoverySessionRef(WriteModel):
    """A run id is optional: the session is bound to one run (a rescue environment given only
    the token learns its run from the answer)."""

    run_id: Id | None = None


class RecoveryRestoreContext(RecoverySessionState):
    """Everything `e3backup agent recover` needs; `job` carries the repository's secrets."""

    status: str
    cancel_requested: bool
    backup_point_id: Id
    snapshot_id: str
    backup_type: str
    source: str
    disk_filter: list[str]
    disk_manifests: dict[str, Any]
    format: str
    job: dict[str, Any]
