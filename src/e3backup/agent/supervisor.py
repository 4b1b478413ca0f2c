"""Supervises one engine process for one run: relays its events, logs and progress, forwards a
cancel, keeps the heartbeat going while the engine is quiet, notices a stalled upload (never in
the last 1 %: finishing is reported as such), and reports the end."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from e3backup.agent.engine_process import EngineProcess
from e3backup.agent.reporting import RunReporter
from e3backup.agent.run_context import EngineTask
from e3backup.agent.state import RunLedger

log = logging.getLogger(__name__)
STALL_AFTER_S = 120.0
FINALIZING_PCT = 99.0
RESULT_FIELDS = (
    "error",
    "error_code",
    "snapshot_id",
    "backup_type",
    "source_results",
    "vm_results",
    "disk_manifests_json",
    "repository_stats",
    "result",
    "bytes_total",
    "bytes_processed",
    "bytes_transferred",
)


class RunSupervisor:
    def __init__(
        self, task: EngineTask, reporter: RunReporter, ledger: RunLedger, kind: str
    ) -> None:
        self.task = task
        self.reporter = reporter
        self.ledger = ledger
        self.kind = kind
        self._cancel_reason: str | None = None
        self._cancel_sent = False
        self._cancel_by_server = False
        self._lock = threading.Lock()
        self.process: EngineProcess | None = None
        self.outcome: dict[str, Any] | None = None
        self._last_pct = -1.0
        self._last_change = time.monotonic()
        self._stall_reported = False

    @property
    def run_id(self) -> int:
        assert self.task.run_id is not None
        return self.task.run_id

    def request_cancel(self, reason: str, by_server: bool = False) -> None:
        """Cancel the engine. `by_server`: the server asked and has already recorded its own
        CANCEL_REQUESTED event, so the agent does not record a second one."""
        with self._lock:
            if self._cancel_reason is None:
                self._cancel_reason = reason
                self._cancel_by_server = by_server

    def run(self) -> dict[str, Any]:
        """Start the engine, relay until it ends; returns the final fields sent."""
        self.reporter.tick(force=True)
        self.process = EngineProcess(self.task)
        self.process.start()
        log.info("run %s: engine process %s started", self.run_id, self.process.pid)
        result: dict[str, Any] = {"status": "failed", "error": "no result from the engine"}
        for message in self.process.messages(0.5):
            self._forward_cancel()
            if message is not None:
                kind, body = message
                if kind == "result":
                    result = body
                    break
                self._relay(kind, body)
            self._watch_stall()
            self.reporter.tick()
            if self.reporter.cancel_requested:
                self.request_cancel("cancel requested by the server", by_server=True)
        return self._finish(result)

    def _forward_cancel(self) -> None:
        with self._lock:
            reason, sent = self._cancel_reason, self._cancel_sent
            self._cancel_sent = reason is not None
        if reason is not None and not sent and self.process is not None:
            log.info("run %s: cancel requested (%s)", self.run_id, reason)
            if not self._cancel_by_server:
                self.reporter.event("CANCEL_REQUESTED", "warn", reason=reason)
            self.process.cancel(reason)

    def _relay(self, kind: str, body: dict[str, Any]) -> None:
        if kind == "event":
            self.reporter.event_doc(body)
        elif kind == "progress":
            self.reporter.progress(body)
            pct = float(body.get("progress_pct") or 0.0)
            if pct != self._last_pct:
                self._last_pct, self._last_change = pct, time.monotonic()
                self._stall_reported = False
        elif kind == "log":
            self.reporter.log_line(body)

    def _watch_stall(self) -> None:
        quiet_s = time.monotonic() - self._last_change
        if self._stall_reported or quiet_s < STALL_AFTER_S or self._last_pct < 0:
            return
        self._stall_reported = True
        source = self.reporter.current_item
        if self._last_pct >= FINALIZING_PCT:
            self.reporter.event("DISK_IMAGE_FINALIZING_SLOW", "info", source=source)
        else:
            log.warning(
                "run %s: no progress for %.0f s at %.1f %%", self.run_id, quiet_s, self._last_pct
            )

    def _finish(self, result: dict[str, Any]) -> dict[str, Any]:
        status = str(result.get("status") or "failed")
        if (
            status == "failed"
            and self._cancel_reason is not None
            and "killed" not in str(result.get("error"))
        ):
            status = "cancelled"
        final: dict[str, Any] = {"status": status}
        final.update({k: result[k] for k in RESULT_FIELDS if result.get(k) is not None})
        if status == "success":
            final["progress_pct"] = 100.0
        if status == "failed" and "engine process" in str(result.get("error")):
            self.reporter.event("BACKUP_FAILED", "error", error=result.get("error"))
        self.ledger.finish(
            self.run_id,
            {
                "status": status,
                "error": final.get("error"),
                "destination": _destination(self.task.job),
            },
        )
        self.reporter.final(final)
        self.outcome = final
        log.info(
            "run %s ended: %s%s",
            self.run_id,
            status,
            f" ({final['error']})" if final.get("error") else "",
        )
        return final


def _destination(job: dict[str, Any]) -> dict[str, Any]:
    """Where the run wrote, without secrets (for `agent status`)."""
    if job.get("dest_type") == "s3":
        return {
            "kind": "s3",
            "location": f"s3://{job.get('dest_bucket')}",
            "endpoint": job.get("dest_endpoint") or "",
        }
    return {"kind": "local", "location": job.get("dest_local_path") or job.get("repository")}
