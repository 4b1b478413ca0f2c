"""One run's reports to the server: events with agent-chosen ids, log batches, progress about
every 2 s (also the heartbeat), and the final update — events, logs and the final update through
the persistent outbox, so nothing is lost while the server is unreachable.

`deliver` empties the outbox in order; a push the server rejects for good (4xx) is dropped with
a warning, an unreachable server stops delivery until the next call.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from e3backup.agent.client import AgentClient, BadResponse, ServerRejected, ServerUnavailable
from e3backup.agent.run_context import now_iso
from e3backup.agent.state import Outbox

log = logging.getLogger(__name__)
UPDATE_INTERVAL_S = 2.0
LOG_BATCH_INTERVAL_S = 2.0
EVENTS_PER_PUSH = 500
LOG_LINES_PER_BATCH = 500
_deliver_lock = threading.Lock()


class RunReporter:
    def __init__(
        self,
        client: AgentClient,
        outbox: Outbox,
        run_id: int,
        attempt: int,
        update_interval_s: float = UPDATE_INTERVAL_S,
    ) -> None:
        self.client = client
        self.outbox = outbox
        self.run_id = run_id
        self.attempt = attempt
        self._seq = 0
        self._progress: dict[str, Any] = {}
        self._logs: list[dict[str, Any]] = []
        self._last_update = 0.0
        self._last_logs = time.monotonic()
        self._interval = update_interval_s
        self.cancel_requested = False

    def event(self, message_id: str, level: str = "info", **params: Any) -> None:
        self.event_doc({"message_id": message_id, "level": level, "params": params})

    def event_doc(self, doc: dict[str, Any]) -> None:
        self._seq += 1
        level = doc.get("level") or "info"
        event = {
            "event_id": f"{self.run_id}-{self.attempt}-{self._seq:06d}",
            "ts": doc.get("ts") or now_iso(),
            "type": "error" if level == "error" else "info",
            "level": "warn" if level == "warning" else level,
            "message_id": doc["message_id"],
            "params": doc.get("params") or {},
        }
        self.outbox.add("events", self.run_id, event)
        deliver(self.client, self.outbox)

    def log_line(self, line: dict[str, Any]) -> None:
        self._logs.append(line)
        if len(self._logs) >= LOG_LINES_PER_BATCH:
            self.flush_logs()

    def flush_logs(self) -> None:
        if self._logs:
            self.outbox.add("logs", self.run_id, self._logs)
            self._logs = []
        self._last_logs = time.monotonic()

    def progress(self, fields: dict[str, Any]) -> None:
        self._progress.update(fields)

    @property
    def current_item(self) -> str:
        return str(self._progress.get("current_item") or "")

    def tick(self, force: bool = False) -> None:
        """Send the latest progress (the heartbeat) when due; a down server is not an error."""
        now = time.monotonic()
        if now - self._last_logs >= LOG_BATCH_INTERVAL_S:
            self.flush_logs()
            deliver(self.client, self.outbox)
        if not force and now - self._last_update < self._interval:
            return
        self._last_update = now
        try:
            answer = self.client.update_run(self.run_id, status="running", **self._progress)
        except (ServerUnavailable, BadResponse) as exc:
            log.info("progress of run %s not sent: %s", self.run_id, exc)
            return
        except ServerRejected as exc:
            log.warning("progress of run %s rejected: %s", self.run_id, exc)
            return
        if answer.cancel_requested:
            self.cancel_requested = True

    def final(self, fields: dict[str, Any]) -> None:
        self.flush_logs()
        self.outbox.add("update", self.run_id, {**self._progress, **fields})
        deliver(self.client, self.outbox)


def deliver(client: AgentClient, outbox: Outbox) -> bool:
    """Push the outbox in order; True when it is empty afterwards."""
    with _deliver_lock:
        while (item := outbox.peek()) is not None:
            try:
                count = _deliver_one(client, outbox, item)
            except ServerUnavailable as exc:
                log.info(
                    "server unreachable, %d report(s) kept for later: %s", outbox.pending(), exc
                )
                return False
            except (ServerRejected, BadResponse) as exc:
                if isinstance(exc, ServerRejected) and exc.status_code == 401:
                    log.error("the server refused the agent's credentials: %s", exc)
                    return False
                log.warning(
                    "dropping a %s report for run %s: %s", item["kind"], item["run_id"], exc
                )
                count = 1
            outbox.drop(count)
        return True


def _deliver_one(client: AgentClient, outbox: Outbox, item: dict[str, Any]) -> int:
    kind, run_id, data = item["kind"], item["run_id"], item["data"]
    if kind == "events":
        events = outbox.take_events(run_id, EVENTS_PER_PUSH)
        client.push_events(run_id, events)
        return len(events)
    if kind == "logs":
        client.push_logs(run_id, data)
    elif kind == "update":
        client.update_run(run_id, **data)
    elif kind == "command":
        client.complete_command(
            data["command_id"], data["status"], data.get("result"), data.get("error")
        )
    return 1
