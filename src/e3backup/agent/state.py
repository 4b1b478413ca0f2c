"""The agent's small persistent state (JSON files in the state directory, written atomically):

- `runs.json`: the runs this agent started (attempt number, outcome) — so a run never executes
  twice: a run seen before runs again only as a fresh attempt when the server hands it back as
  reclaimed, and a finished run is only reported, never re-run;
- `outbox.json`: events, log batches and final run updates not yet accepted by the server, in
  order. Events carry agent-chosen ids, so a retried push is idempotent on the server. Bounded:
  past the limit, log lines go first; events and final updates are kept.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
MAX_REMEMBERED_RUNS = 500
MAX_OUTBOX_ITEMS = 20_000


def _write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(doc, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable agent state %s: %s", path, exc)
        return default


class RunLedger:
    """Which runs this agent has started, and how they ended."""

    def __init__(self, directory: Path) -> None:
        self._path = directory / "runs.json"
        self._lock = threading.Lock()
        doc = _read_json(self._path, {})
        self._runs: dict[str, dict[str, Any]] = dict(doc.get("runs", {}))
        self.last_run: dict[str, Any] | None = doc.get("last_run")

    def get(self, run_id: int) -> dict[str, Any] | None:
        with self._lock:
            entry = self._runs.get(str(run_id))
            return dict(entry) if entry else None

    def start(self, run_id: int, kind: str) -> int:
        """Record a new attempt; returns its number (1 for a run never seen)."""
        with self._lock:
            entry = self._runs.get(str(run_id), {"attempt": 0})
            attempt = int(entry["attempt"]) + 1
            self._runs[str(run_id)] = {"attempt": attempt, "kind": kind, "finished": False}
            self._save()
            return attempt

    def finish(self, run_id: int, final: dict[str, Any]) -> None:
        with self._lock:
            entry = self._runs.setdefault(str(run_id), {"attempt": 1})
            entry.update(finished=True, final=final)
            self.last_run = {"run_id": run_id, **final}
            self._save()

    def _save(self) -> None:
        while len(self._runs) > MAX_REMEMBERED_RUNS:
            self._runs.pop(next(iter(self._runs)))
        _write_json(self._path, {"runs": self._runs, "last_run": self.last_run})


class Outbox:
    """Ordered, persistent queue of what the server has not accepted yet."""

    def __init__(self, directory: Path, max_items: int = MAX_OUTBOX_ITEMS) -> None:
        self._path = directory / "outbox.json"
        self._lock = threading.Lock()
        self._max = max_items
        self._items: list[dict[str, Any]] = list(_read_json(self._path, []))

    def add(self, kind: str, run_id: int, data: Any) -> None:
        with self._lock:
            self._items.append({"kind": kind, "run_id": run_id, "data": data})
            self._trim()
            self._save()

    def peek(self) -> dict[str, Any] | None:
        with self._lock:
            return dict(self._items[0]) if self._items else None

    def take_events(self, run_id: int, limit: int) -> list[dict[str, Any]]:
        """The consecutive `events` items at the head for `run_id` (not removed)."""
        with self._lock:
            out: list[dict[str, Any]] = []
            for item in self._items:
                if item["kind"] != "events" or item["run_id"] != run_id or len(out) >= limit:
                    break
                out.append(item["data"])
            return out

    def drop(self, count: int = 1) -> None:
        with self._lock:
            del self._items[:count]
            self._save()

    def pending(self, run_id: int | None = None) -> int:
        with self._lock:
            return sum(1 for i in self._items if run_id is None or i["run_id"] == run_id)

    def has_final(self, run_id: int) -> bool:
        with self._lock:
            return any(i["kind"] == "update" and i["run_id"] == run_id for i in self._items)

    def _trim(self) -> None:
        excess = len(self._items) - self._max
        if excess <= 0:
            return
        kept = []
        for item in self._items:
            if excess > 0 and item["kind"] == "logs":
                excess -= 1
                continue
            kept.append(item)
        if excess > 0:
            log.warning("agent outbox full: %d undelivered item(s) dropped", excess)
            kept = kept[excess:]
        self._items = kept

    def _save(self) -> None:
        _write_json(self._path, self._items)
