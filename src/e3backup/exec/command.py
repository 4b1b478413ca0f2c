"""Run an external tool: binary resolved up front, timeout, allowed exit codes, logged output.

stdout lines go to DEBUG and stderr lines to WARNING under the tool's name (Barman's
`command_wrappers.Command` habit); the result is immutable. A missing binary, a timeout or an
unexpected exit status raises `CommandFailed` with the command line and the tail of stderr.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from e3backup.core.errors import CommandFailed

log = logging.getLogger(__name__)

_STDERR_TAIL_CHARS = 2000


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Command:
    """A tool that can be run many times: `Command("qemu-img").run(["info", path])`."""

    def __init__(self, name: str, allowed_exit_codes: Sequence[int] = (0,)) -> None:
        self.name = name
        self.allowed_exit_codes = tuple(allowed_exit_codes)
        self._path: str | None = None

    @property
    def path(self) -> str:
        if self._path is None:
            found = shutil.which(self.name)
            if found is None:
                raise CommandFailed(f"{self.name} is not installed (not found on PATH)")
            self._path = found
        return self._path

    def available(self) -> bool:
        try:
            return bool(self.path)
        except CommandFailed:
            return False

    def run(
        self,
        args: Sequence[str | Path],
        timeout_s: float = 600.0,
        allowed_exit_codes: Sequence[int] | None = None,
        input_text: str | None = None,
    ) -> CommandResult:
        argv = (self.path, *map(str, args))
        tool_log = logging.getLogger(f"{__name__}.{self.name}")
        log.debug("running %s", " ".join(argv))
        try:
            proc = subprocess.run(
                argv,
                input=input_text,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CommandFailed(f"{self.name} did not finish within {timeout_s:.0f} s") from None
        except OSError as exc:
            raise CommandFailed(f"cannot run {self.name}: {exc.strerror or exc}") from exc
        for line in proc.stdout.splitlines():
            tool_log.debug("%s", line)
        for line in proc.stderr.splitlines():
            tool_log.warning("%s", line)
        result = CommandResult(argv, proc.returncode, proc.stdout, proc.stderr)
        allowed = self.allowed_exit_codes if allowed_exit_codes is None else allowed_exit_codes
        if proc.returncode not in allowed:
            tail = proc.stderr.strip()[-_STDERR_TAIL_CHARS:] or "(no error output)"
            raise CommandFailed(f"{self.name} exited with status {proc.returncode}: {tail}")
        return result
