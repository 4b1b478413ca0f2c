"""Recovery session wire models (seed 003): the token answer and what its endpoints return."""

from __future__ import annotations

from datetime import datetime

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
