"""Shared CLI state: where the repository is and how to get its password."""

from __future__ import annotations

import getpass
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from e3backup.core.cancel import CancelToken
from e3backup.core.errors import UsageError

if TYPE_CHECKING:  # imported when used: the server's commands never load repository code
    from e3backup.repo.repository import Repository
    from e3backup.storage.backend import Backend

PASSWORD_ENV = "E3BACKUP_PASSWORD"
REPO_ENV = "E3BACKUP_REPO"


@dataclass
class CliContext:
    """Set from the repository options (cli/conventions.py), before and after the command."""

    repo_location: str | None = None
    password_file: Path | None = None
    endpoint: str | None = None
    upload_limit_kibps: int | None = None
    download_limit_kibps: int | None = None
    verbosity: int = 0
    _password: str | None = field(default=None, repr=False)

    def backend(self) -> Backend:
        from e3backup.storage.factory import open_backend

        if not self.repo_location:
            raise UsageError(f"no repository given: pass --repo or set {REPO_ENV}")
        return open_backend(
            self.repo_location,
            endpoint=self.endpoint,
            upload_limit_kibps=self.upload_limit_kibps,
            download_limit_kibps=self.download_limit_kibps,
        )

    def create_bucket_if_missing(self) -> None:
        """For `repo init` on S3: make the bucket (a no-op when it exists or for paths)."""
        if self.repo_location and self.repo_location.startswith("s3://"):
            from e3backup.storage.factory import open_s3

            open_s3(self.repo_location, endpoint=self.endpoint).ensure_bucket()

    def password(self, confirm: bool = False) -> str:
        """The repository password, asked for (or read) once per run."""
        if self._password is not None:
            return self._password
        if self.password_file is not None:
            password = read_password_file(self.password_file)
        elif os.environ.get(PASSWORD_ENV):
            password = os.environ[PASSWORD_ENV]
        elif sys.stdin.isatty():
            password = prompt_password("repository password: ", confirm)
        else:
            raise UsageError(
                f"a password is needed: set {PASSWORD_ENV}, pass --password-file, "
                "or run in a terminal"
            )
        if not password:
            raise UsageError("the password is empty")
        self._password = password
        return password

    def open_repository(self) -> Repository:
        from e3backup.repo.repository import Repository

        backend = self.backend()
        return Repository.open(backend, _LazyPassword(self).get)


def read_password_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read password file {path}: {exc}") from exc
    return text.rstrip("\r\n")


def prompt_password(prompt: str, confirm: bool) -> str:
    password = getpass.getpass(prompt)
    if confirm and getpass.getpass("repeat password: ") != password:
        raise UsageError("the passwords do not match")
    return password


class _LazyPassword:
    """Asks for the password only if the repository turns out to be encrypted."""

    def __init__(self, ctx: CliContext) -> None:
        self._ctx = ctx

    def get(self) -> str:
        return self._ctx.password()


@contextmanager
def cancel_on_interrupt() -> Iterator[CancelToken]:
    """Ctrl-C / SIGTERM cancel the running engine, which stops promptly and cleans up."""
    token = CancelToken()

    def handler(signum: int, _frame: object) -> None:
        token.cancel(f"cancelled by signal {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield token
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
