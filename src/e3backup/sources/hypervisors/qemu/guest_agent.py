"""A synchronous qemu-guest-agent client (virtio-serial channel exposed as a unix socket).

The agent is silent when absent or busy, so every call has a timeout; on connect we send 0xFF +
`guest-sync-delimited` and discard everything up to the matching answer (stale replies of a
previous client may still be in the channel).
"""

from __future__ import annotations

import json
import logging
import random
import socket
import time
from pathlib import Path
from typing import Any

from e3backup.sources.hypervisors.base import HypervisorError

log = logging.getLogger(__name__)

PING_TIMEOUT_S = 5.0
FREEZE_TIMEOUT_S = 60.0


class GuestAgentError(HypervisorError):
    """The guest agent is missing, silent, or refused a command."""


class GuestAgent:
    def __init__(self, path: Path, timeout_s: float = PING_TIMEOUT_S) -> None:
        self.path = Path(path)
        self._buf = b""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        try:
            self._sock.connect(str(self.path))
            self._sync(timeout_s)
        except OSError as exc:
            self._sock.close()
            raise GuestAgentError(f"guest agent at {path} is not answering: {exc}") from exc
        except BaseException:
            self._sock.close()
            raise

    def _sync(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        sync_id = random.randrange(1, 2**31)
        message = {"execute": "guest-sync-delimited", "arguments": {"id": sync_id}}
        self._sock.sendall(b"\xff" + json.dumps(message).encode() + b"\n")
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GuestAgentError(f"guest agent at {self.path} did not answer guest-sync")
            line = self._read_line(remaining)
            line = line.rsplit(b"\xff", 1)[-1].strip()
            if not line:
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("return") == sync_id:
                return

    def _read_line(self, timeout_s: float) -> bytes:
        self._sock.settimeout(max(timeout_s, 0.01))
        while b"\n" not in self._buf:
            try:
                data = self._sock.recv(65536)
            except TimeoutError as exc:
                raise GuestAgentError(f"guest agent at {self.path} timed out") from exc
            if not data:
                raise GuestAgentError(f"guest agent at {self.path} closed the channel")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def execute(
        self, command: str, arguments: dict[str, Any] | None = None, timeout_s: float = 30.0
    ) -> Any:
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError as exc:
            raise GuestAgentError(f"guest agent at {self.path}: {exc}") from exc
        deadline = time.monotonic() + timeout_s
        while True:
            line = self._read_line(deadline - time.monotonic()).strip(b"\xff \r\n")
            if not line:
                continue
            doc = json.loads(line)
            if "error" in doc:
                desc = doc["error"].get("desc", "?")
                raise GuestAgentError(f"guest agent refused {command}: {desc}")
            if "return" in doc:
                return doc["return"]

    def ping(self) -> None:
        self.execute("guest-ping", timeout_s=PING_TIMEOUT_S)

    def freeze(self) -> int:
        """Freeze the guest's filesystems; returns how many (on error the agent thaws all)."""
        return int(self.execute("guest-fsfreeze-freeze", timeout_s=FREEZE_TIMEOUT_S))

    def thaw(self) -> int:
        return int(self.execute("guest-fsfreeze-thaw", timeout_s=FREEZE_TIMEOUT_S))

    def freeze_status(self) -> str:
        return str(self.execute("guest-fsfreeze-status", timeout_s=PING_TIMEOUT_S))

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> GuestAgent:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
