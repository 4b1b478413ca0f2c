"""Long-running helper processes (qemu-nbd, qemu-storage-daemon): start, wait ready, stop.

Output goes to a log file beside the socket rather than a pipe nobody drains; the tail of it is
quoted when the process dies early. Stopping is by our own PID only: terminate, then kill.
A detached daemon gets its own session and no stdin, so it outlives the command that started it
and a Ctrl-C in that terminal does not reach it (its PID goes in a PID file: exec.pidfile).
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from e3backup.core.errors import CommandFailed
from e3backup.exec.command import Command

log = logging.getLogger(__name__)


class Daemon:
    def __init__(
        self, command: Command, args: Sequence[str | Path], log_path: Path, detach: bool = False
    ) -> None:
        self.command = command
        self.args = [str(a) for a in args]
        self.log_path = log_path
        self.detach = detach
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: Callable[[], bool], timeout_s: float = 30.0) -> None:
        """Start and poll `ready()` until it is true; raise CommandFailed if the process dies."""
        argv = [self.command.path, *self.args]
        log.debug("starting %s", " ".join(argv))
        with open(self.log_path, "ab" if self.detach else "wb") as out:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL if self.detach else None,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=self.detach,
            )
        deadline = time.monotonic() + timeout_s
        while not ready():
            if self._proc.poll() is not None:
                raise CommandFailed(
                    f"{self.command.name} exited with status {self._proc.returncode}: "
                    f"{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise CommandFailed(f"{self.command.name} was not ready within {timeout_s:.0f} s")
            time.sleep(0.02)

    def exit_failure(self, timeout_s: float = 5.0) -> CommandFailed | None:
        """If the process exits within `timeout_s`, the error saying why (with its log tail).

        For a caller whose first connection failed: a daemon may create its socket before it
        opens its input (qemu-nbd does) and then exit, so "connection refused" hides the cause.
        """
        if self._proc is None:
            return None
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None
        return CommandFailed(
            f"{self.command.name} exited with status {self._proc.returncode}: {self._log_tail()}"
        )

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except OSError:
            return "(no output)"
        return text[-2000:] or "(no output)"
