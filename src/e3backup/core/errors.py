"""The error family. Every error a user can cause is one of these.

Each class carries whether retrying may help and the CLI exit code (Borg's habit), so callers
never translate exceptions by string matching.
"""

from __future__ import annotations


class E3Error(Exception):
    """Root of every e3backup error; its message is meant for the user."""

    exit_code = 2
    retryable = False


class UsageError(E3Error):
    """The user asked for something that cannot be done as asked (bad argument, bad file)."""

    exit_code = 2


class TargetTooSmall(UsageError):
    """The restore target (a block device) is smaller than the disk to restore."""

    exit_code = 43


class CancelledError(E3Error):
    """The operation was cancelled on request; the repository is left consistent."""

    exit_code = 130


# --- storage -----------------------------------------------------------------------------------


class StorageError(E3Error):
    """A backend operation failed."""

    exit_code = 20


class ObjectNotFound(StorageError):
    """The backend has no object under that key."""

    exit_code = 21


class RangeOutsideObject(StorageError):
    """A ranged read reaches past the end of the object: it is shorter than the caller expects
    (the repository turns this into an `IntegrityError` for a pack its index describes)."""


class TransientStorageError(StorageError):
    """A failure that may succeed when retried (timeout, throttling, 5xx, connection reset)."""

    retryable = True


# --- repository --------------------------------------------------------------------------------


class RepositoryError(E3Error):
    """The repository cannot be used as asked."""

    exit_code = 10


class RepositoryNotFound(RepositoryError):
    exit_code = 10


class RepositoryExists(RepositoryError):
    exit_code = 11


class WrongPassword(RepositoryError):
    exit_code = 12


class IntegrityError(RepositoryError):
    """Stored data does not verify: corrupt, truncated or tampered. Never returned as data."""

    exit_code = 13


class SnapshotNotFound(RepositoryError):
    exit_code = 14


class FormatError(RepositoryError):
    """A stored structure has an unknown version or an impossible shape."""

    exit_code = 15


# --- sources -----------------------------------------------------------------------------------


class SourceError(E3Error):
    """The thing being backed up cannot be read as asked."""

    exit_code = 30


class ImageFormatError(SourceError):
    """A disk image file (VHDX, ...) is malformed, unsupported or needs repair before reading."""


class CommandFailed(E3Error):
    """An external tool exited with an unexpected status."""

    exit_code = 31
