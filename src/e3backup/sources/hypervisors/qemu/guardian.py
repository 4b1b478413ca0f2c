"""The cleanup guardian: a tiny child that ends a backup the engine could not end itself.

While a point-in-time view exists the engine holds a unix-socket connection to the guardian and
sends it the `TeardownPlan` (again whenever the plan changes: rotations pending, committed).
"done" on that connection means the engine cleaned up: the guardian exits without touching
anything. End of file without "done" means the engine died (SIGKILL, OOM, crash): the kernel
closed the engine's QMP and guest-agent connections too, so the guardian connects to QMP (one
client per monitor socket: it never competes with a live engine), runs the same `abandon` the
engine runs on failure, and exits. It ignores SIGINT: a Ctrl-C reaches the whole process group,
and the engine, which handles it, still needs the QMP socket.

Run as `python -m e3backup.sources.hypervisors.qemu.guardian --control SOCKET`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from e3backup.core.errors import E3Error
from e3backup.exec.command import Command
from e3backup.exec.daemon import Daemon
from e3backup.sources.hypervisors.qemu.teardown import TeardownPlan

log = logging.getLogger(__name__)

MODULE = "e3backup.sources.hypervisors.qemu.guardian"
START_TIMEOUT_S = 30.0
TAKEOVER_TIMEOUT_S = 60.0


class Guardian:
    """The engine's side: start the child, keep it informed, tell it "done"."""

    def __init__(self, daemon: Daemon, conn: socket.socket, log_path: Path) -> None:
        self._daemon = daemon
        self._conn: socket.socket | None = conn
        self._log_path = log_path

    @classmethod
    def start(cls, plan: TeardownPlan, control: Path, log_path: Path) -> Guardian:
        control.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        accepted: list[socket.socket] = []
        try:
            listener.bind(str(control))
            listener.listen(1)
            listener.setblocking(False)

            def ready() -> bool:
                with contextlib.suppress(BlockingIOError):
                    accepted.append(listener.accept()[0])
                return bool(accepted)

            daemon = Daemon(Command(sys.executable), ["-m", MODULE, "--control", control], log_path)
            daemon.start(ready, START_TIMEOUT_S)
        finally:
            listener.close()
            control.unlink(missing_ok=True)
        conn = accepted[0]
        conn.setblocking(True)
        conn.settimeout(10.0)
        guardian = cls(daemon, conn, log_path)
        guardian.update(plan)
        return guardian

    @property
    def pid(self) -> int | None:
        return self._daemon.pid

    def update(self, plan: TeardownPlan) -> None:
        self._send({"plan": plan.to_dict()})

    def done(self) -> None:
        """Normal end: the engine cleaned up; the guardian exits untouched."""
        self._send({"done": True})
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._daemon.exit_failure(5.0) is None:
            self._daemon.stop()
        self._log_path.unlink(missing_ok=True)

    def _send(self, message: dict[str, Any]) -> None:
        if self._conn is None:
            return
        try:
            self._conn.sendall(json.dumps(message).encode() + b"\n")
        except OSError as exc:
            log.warning("the cleanup guardian is gone (%s); the next backup cleans up", exc)
            self._conn.close()
            self._conn = None


# --- the child ----------------------------------------------------------------------------------


def watch(control: Path) -> TeardownPlan | None:
    """Follow the engine; the plan to run if it died, None if it said "done"."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(control))
    plan: TeardownPlan | None = None
    buf = b""
    with conn:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            if not data:
                return plan
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                message = json.loads(line)
                if message.get("done"):
                    return None
                if "plan" in message:
                    plan = TeardownPlan.from_dict(message["plan"])


def take_over(plan: TeardownPlan, timeout_s: float = TAKEOVER_TIMEOUT_S) -> None:
    from e3backup.sources.hypervisors.qemu.qmp import QmpClient
    from e3backup.sources.hypervisors.qemu.teardown import abandon

    deadline = time.monotonic() + timeout_s
    while True:  # QEMU may not have noticed the engine's monitor connection closing yet
        try:
            qmp = QmpClient(Path(plan.qmp), timeout_s=10.0)
            break
        except E3Error as exc:
            if time.monotonic() > deadline:
                log.error("cannot reach QEMU to clean up: %s", exc)
                return
            time.sleep(0.2)
    with qmp:
        abandon(qmp, plan)
    log.warning("the engine died mid-backup; its exports, jobs and scratch nodes are removed")


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parser = argparse.ArgumentParser(prog=MODULE)
    parser.add_argument("--control", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    plan = watch(args.control)
    if plan is not None:
        take_over(plan)
    return 0


if __name__ == "__main__":
    sys.exit(main())
