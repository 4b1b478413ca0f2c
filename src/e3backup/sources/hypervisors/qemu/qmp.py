"""A synchronous QMP client: JSON lines over a unix socket.

QMP is strictly request/reply with asynchronous events interleaved; one blocking socket with an
id per request is all a backup needs (and sidesteps the asyncio event-loop ownership of the
`qemu.qmp` library).
"""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any

from e3backup.sources.hypervisors.base import HypervisorError

log = logging.getLogger(__name__)


class QmpError(HypervisorError):
    """QEMU answered a command with an error."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"QMP {command} failed: {desc} ({error_class})")
        self.error_class = error_class
        self.desc = desc


class QmpClient:
    def __init__(self, path: Path, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        self._buf = b""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        try:
            self._sock.connect(str(self.path))
            greeting = self._read_message()
            if "QMP" not in greeting:
                raise HypervisorError(f"{path} is not a QMP socket")
            self.execute("qmp_capabilities")
        except OSError as exc:
            self._sock.close()
            raise HypervisorError(f"cannot talk to QEMU at {path}: {exc.strerror or exc}") from exc
        except BaseException:
            self._sock.close()
            raise

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        self._next_id += 1
        request_id = f"e3b-{self._next_id}"
        message: dict[str, Any] = {"execute": command, "id": request_id}
        if arguments:
            message["arguments"] = arguments
        log.debug("qmp -> %s", message)
        try:
            self._sock.sendall(json.dumps(message).encode() + b"\n")
            while True:
                reply = self._read_message()
                if "event" in reply:
                    self.events.append(reply)
                    continue
                if reply.get("id") != request_id:
                    continue
                break
        except OSError as exc:
            raise HypervisorError(f"QEMU at {self.path} stopped answering: {exc}") from exc
        log.debug("qmp <- %s", reply)
        if "error" in reply:
            err = reply["error"]
            raise QmpError(command, err.get("class", "?"), err.get("desc", "?"))
        return reply.get("return")

    def _read_message(self) -> dict[str, Any]:
        while b"\n" not in self._buf:
            data = self._sock.recv(65536)
            if not data:
                raise HypervisorError(f"QEMU at {self.path} closed the QMP connection")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        doc = json.loads(line)
        if not isinstance(doc, dict):
            raise HypervisorError("QEMU sent a malformed QMP message")
        return doc

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> QmpClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
