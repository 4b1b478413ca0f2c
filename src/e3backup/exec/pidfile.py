"""PID files for detached background processes (`e3backup quickstart`'s server and agent).

A PID file alone is not proof: the PID may have been reused since. A process counts as ours only
while its command line still holds a marker we started it with (its data dir or config path), so
stopping never signals a process we did not start.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

STOP_TIMEOUT_S = 20.0


def write_pid(path: Path, pid: int) -> None:
    path.write_text(f"{pid}\n")


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _command_line(pid: int) -> str | None:
    """The process's argv joined by spaces, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return "" if _exists(pid) else None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def running_pid(path: Path, marker: str) -> int | None:
    """The PID in `path` if that process is alive and its command line contains `marker`."""
    pid = read_pid(path)
    if pid is None or _is_zombie(pid):
        return None
    command_line = _command_line(pid)
    if command_line is None or marker not in command_line:
        return None
    return pid


def stop_pid(path: Path, marker: str, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
    """SIGTERM the process in `path` if it is ours, SIGKILL after `timeout_s`; the PID file is
    removed either way. Returns the PID stopped, or None when nothing of ours was running."""
    pid = running_pid(path, marker)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while running_pid(path, marker) is not None:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + timeout_s
            time.sleep(0.1)
    path.unlink(missing_ok=True)
    return pid
