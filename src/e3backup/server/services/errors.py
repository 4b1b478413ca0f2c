"""The service error family; `server/api` maps each class to one HTTP status."""

from __future__ import annotations

from e3backup.core.errors import E3Error


class ServiceError(E3Error):
    """A request the server refuses; the message is shown to the caller as is."""

    exit_code = 2


class NotFound(ServiceError):
    """Unknown id, or one that belongs to a tenant the caller cannot see (same answer)."""


class Forbidden(ServiceError):
    """The caller is known but its role does not allow this."""


class Unauthorized(ServiceError):
    """Missing, wrong, expired or revoked credentials."""


class RateLimited(ServiceError):
    """Too many failed attempts from this address or for this id; try again later."""


class Conflict(ServiceError):
    """The request contradicts the current state (a terminal run, an active run...)."""


class Invalid(ServiceError):
    """Input that is well-formed JSON but not acceptable; `field` names the culprit."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
