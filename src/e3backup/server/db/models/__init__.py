"""All tables, one module per domain. Importing this package registers every table on
`Base.metadata` (Alembic and the tests rely on that)."""

from e3backup.server.db.models.agents import Agent, Vm, VmDisk
from e3backup.server.db.models.audit import AuditEntry, NotificationOutbox
from e3backup.server.db.models.commands import Command
from e3backup.server.db.models.jobs import Job
from e3backup.server.db.models.runs import BackupPoint, RecoverySession, Run, RunEvent, RunLog
from e3backup.server.db.models.tenancy import (
    ApiToken,
    EnrollmentToken,
    Tenant,
    User,
    UserSession,
)

__all__ = [
    "Agent",
    "ApiToken",
    "AuditEntry",
    "BackupPoint",
    "Command",
    "EnrollmentToken",
    "Job",
    "NotificationOutbox",
    "RecoverySession",
    "Run",
    "RunEvent",
    "RunLog",
    "Tenant",
    "User",
    "UserSession",
    "Vm",
    "VmDisk",
]
