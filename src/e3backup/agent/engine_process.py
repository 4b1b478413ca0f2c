"""Engines run in a child process (multiprocessing, spawn): a crash, an OOM kill or a SIGKILL of
an engine ends that run as failed with the reason, never the agent.

The child's cleanups that must survive its death (an LVM snapshot to remove) are registered with
the agent, which runs them if the child dies first; the QEMU provider's guardian already undoes
a VM backup's exports, jobs and freezes when its engine dies.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from e3backup.agent.run_context import EngineTask, RunContext, now_iso
from e3backup.core.cancel import CancelToken
from e3backup.core.errors import CancelledError, CommandFailed, E3Error
from e3backup.exec.command import Command

log = logging.getLogger(__name__)
Message = tuple[str, dict[str, Any]]
REDACTED = "[redacted]"


class _PipeLogHandler(logging.Handler):
    """The child's INFO-and-up log lines, secrets redacted, to the agent (seed run_logs)."""

    def __init__(self, send: Any, secrets: list[str]) -> None:
        super().__init__(logging.INFO)
        self._send = send
        self._secrets = secrets

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            for value in self._secrets:
                text = text.replace(value, REDACTED)
            level = record.levelname.lower()
            self._send(("log", {"ts": now_iso(), "level": level, "message": text[:10_000]}))
        except Exception:  # a log line must never break the engine
            pass


def child_main(conn: Connection, task: EngineTask) -> None:
    """Entry of the engine process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent decides; it sends "cancel"
    lock = threading.Lock()

    def send(message: Message) -> None:
        with lock:
            conn.send(message)

    root = logging.getLogger()
    root.setLevel(min(task.log_level, logging.INFO))
    root.addHandler(_PipeLogHandler(send, task.secrets()))
    cancel = CancelToken()
    threading.Thread(target=_listen, args=(conn, cancel), daemon=True).start()
    ctx = RunContext(task, send, cancel)
    send(("result", _run_task(task, ctx)))
    conn.close()


def _listen(conn: Connection, cancel: CancelToken) -> None:
    while True:
        try:
            kind, reason = conn.recv()
        except (EOFError, OSError):
            cancel.cancel("the agent went away")
            return
        if kind == "cancel":
            cancel.cancel(str(reason))


def _run_task(task: EngineTask, ctx: RunContext) -> dict[str, Any]:
    from e3backup.agent.handlers import dispatch

    try:
        return dispatch(task, ctx)
    except CancelledError as exc:
        ctx.emit("CANCELLED", "info", message=str(exc) or "cancelled")
        return {"status": "cancelled", "error": str(exc) or "cancelled"}
    except E3Error as exc:
        log.error("%s", exc)
        return {"status": "failed", "error": str(exc), "error_code": getattr(exc, "code", None)}
    except Exception as exc:
        log.error("engine error: %s\n%s", exc, traceback.format_exc())
        return {"status": "failed", "error": f"internal error in the engine: {exc!r}"}


class EngineProcess:
    """The agent's handle on one engine process."""

    def __init__(self, task: EngineTask) -> None:
        spawn = multiprocessing.get_context("spawn")
        self._conn, child_conn = spawn.Pipe()
        name = f"e3backup-engine-{task.kind}-{task.run_id}"
        self.process = spawn.Process(target=child_main, args=(child_conn, task), name=name)
        self._child_conn = child_conn
        self._cleanups: dict[str, list[str]] = {}

    def start(self) -> None:
        self.process.start()
        self._child_conn.close()  # the child holds its end now: EOF means it died

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def cancel(self, reason: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(("cancel", reason))

    def messages(self, timeout_s: float) -> Iterator[Message | None]:
        """Messages as they come (None after `timeout_s` of quiet), ending with ("result", …);
        a dead child yields a failed result with the reason."""
        while True:
            try:
                if not self._conn.poll(timeout_s):
                    yield None
                    continue
                message: Message = self._conn.recv()
            except (EOFError, OSError):
                yield ("result", self._died())
                return
            kind, body = message
            if kind == "cleanup":
                self._cleanups[body["id"]] = body["argv"]
            elif kind == "cleanup_done":
                self._cleanups.pop(body["id"], None)
            else:
                yield message
            if kind == "result":
                self.process.join(30)
                return

    def _died(self) -> dict[str, Any]:
        self.process.join(30)
        code = self.process.exitcode
        if code is not None and code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with status {code}"
        self._run_cleanups()
        return {"status": "failed", "error": f"the engine process {how} before finishing"}

    def _run_cleanups(self) -> None:
        for cleanup_id, argv in list(self._cleanups.items()):
            try:
                Command(argv[0]).run(argv[1:], timeout_s=120)
                log.info("cleanup after a dead engine: %s", " ".join(argv))
            except CommandFailed as exc:
                log.warning("cleanup %s after a dead engine failed: %s", cleanup_id, exc)
        self._cleanups.clear()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(30)
