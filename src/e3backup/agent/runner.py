"""The poll loop (seed Runner.Start): every `poll_interval_s` (jittered) ask for a run when
idle, and poll commands (every 3 s while something runs, for cancels); back off exponentially
up to 60 s while the server is down; log and skip a bad answer, never crash.

One backup run at a time (its own thread + engine process); commands run beside it, one at a
time, in the command thread. A run is never executed twice (see state.RunLedger).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import asdict
from typing import Any

from e3backup.agent import commands
from e3backup.agent.client import AgentApiError, AgentClient, BadResponse, ServerRejected
from e3backup.agent.config import AgentConfig
from e3backup.agent.reporting import RunReporter, deliver
from e3backup.agent.run_context import EngineTask
from e3backup.agent.state import Outbox, RunLedger
from e3backup.agent.supervisor import RunSupervisor
from e3backup.agent.wire import AgentCommand, RunAssignment

log = logging.getLogger(__name__)
ACTIVE_POLL_S = 3.0  # seed: cancel polling every 3 s during a run
MAX_BACKOFF_S = 60.0
JITTER = 0.2
VOLUMES_EVERY_S = 600.0


class Backoff:
    def __init__(self, base_s: float, max_s: float = MAX_BACKOFF_S) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self.failures = 0

    def failed(self) -> float:
        self.failures += 1
        return float(min(self.max_s, self.base_s * 2**self.failures))

    def reset(self) -> None:
        self.failures = 0


def jittered(seconds: float) -> float:
    return seconds * random.uniform(1 - JITTER, 1 + JITTER)


class Runner:
    def __init__(self, config: AgentConfig, client: AgentClient | None = None) -> None:
        config.require_enrolled()
        self.config = config
        self.client = client or AgentClient(config)
        state = config.state_path
        self.ledger = RunLedger(state)
        self.outbox = Outbox(state)
        self.stopping = threading.Event()
        self.backoff = Backoff(config.poll_interval_s)
        self._supervisors: dict[int, RunSupervisor] = {}
        self._backup_thread: threading.Thread | None = None
        self._commands: queue.Queue[AgentCommand | None] = queue.Queue()
        self._command_thread = threading.Thread(
            target=self._command_loop, name="agent-commands", daemon=True
        )
        self._next_volumes = 0.0
        self._combined_poll = True

    # --- lifecycle ------------------------------------------------------------------------------

    def run_forever(self) -> None:
        log.info(
            "agent %s polling %s every %.1f s",
            self.config.agent_id,
            self.config.server_url,
            self.config.poll_interval_s,
        )
        self._command_thread.start()
        while not self.stopping.is_set():
            wait_s = self.poll_once()
            self.stopping.wait(wait_s)
        self._shutdown()

    def stop(self, reason: str = "agent stopping") -> None:
        """Stop polling; running engines are cancelled and their end reported."""
        log.info("%s", reason)
        for supervisor in list(self._supervisors.values()):
            supervisor.request_cancel(reason)
        self.stopping.set()

    def _shutdown(self) -> None:
        for supervisor in list(self._supervisors.values()):
            supervisor.request_cancel("agent stopping")
        if self._backup_thread is not None:
            self._backup_thread.join()
        self._commands.put(None)
        self._command_thread.join(timeout=600)
        deliver(self.client, self.outbox)
        self.client.close()

    @property
    def busy(self) -> bool:
        return bool(self._supervisors) or not self._commands.empty()

    # --- one poll -------------------------------------------------------------------------------

    def poll_once(self) -> float:
        """One round; returns how long to wait before the next."""
        try:
            deliver(self.client, self.outbox)
            if self._backup_thread is not None and not self._backup_thread.is_alive():
                self._backup_thread = None
            found = self._poll()
            for command in found:
                self._dispatch(command)
            self._maybe_report_volumes()
        except ServerRejected as exc:
            log.error("the server rejected the agent: %s", exc)
            return jittered(self.backoff.failed())
        except AgentApiError as exc:
            delay = self.backoff.failed()
            log.warning("%s; next try in %.0f s", exc, delay)
            return jittered(delay)
        self.backoff.reset()
        interval = ACTIVE_POLL_S if self._supervisors else self.config.poll_interval_s
        return jittered(min(interval, self.config.poll_interval_s))

    def _poll(self) -> list[AgentCommand]:
        """A run to start (when no backup is running) and the pending commands: one combined
        poll, or next_run + poll_commands with a server that predates it (404)."""
        claim = self._backup_thread is None
        if self._combined_poll:
            active = next(iter(self._supervisors), None)
            try:
                assignment, found = self.client.poll(active, claim)
            except ServerRejected as exc:
                if exc.status_code != 404:
                    raise
                log.info("the server has no combined poll; using next_run + poll_commands")
                self._combined_poll = False
            else:
                if assignment is not None:
                    self._accept(assignment)
                return found
        if claim:
            self._claim_next_run()
        found, _ = self.client.poll_commands(next(iter(self._supervisors), None))
        return found

    def _claim_next_run(self) -> None:
        """A malformed assignment is logged and skipped; the commands are still polled."""
        try:
            assignment = self.client.next_run()
        except BadResponse as exc:
            log.warning("skipping a bad run assignment: %s", exc)
            return
        if assignment is not None:
            self._accept(assignment)

    def _accept(self, run: RunAssignment) -> None:
        seen = self.ledger.get(run.run_id)
        if seen is not None and seen.get("finished"):
            self._report_again(run.run_id, seen)
            return
        if seen is not None and not run.reclaimed:
            log.warning("run %s was already started here and not handed back: skipped", run.run_id)
            return
        attempt = self.ledger.start(run.run_id, "backup")
        reporter = RunReporter(self.client, self.outbox, run.run_id, attempt)
        if attempt > 1:
            reporter.event(
                "BACKUP_STARTING",
                "warn",
                message=f"resuming after an agent restart (attempt {attempt})",
            )
        task = EngineTask(
            "backup",
            run.run_id,
            run.model_dump(),
            qemu=self.qemu_settings(),
            hyperv=self.hyperv_settings(),
        )
        self._start_supervisor(RunSupervisor(task, reporter, self.ledger, "backup"))

    def _report_again(self, run_id: int, seen: dict[str, Any]) -> None:
        """A run that ended here is handed back: report its end again, never run it again."""
        if self.outbox.has_final(run_id):
            return
        final = dict(seen.get("final") or {"status": "failed", "error": "agent lost the result"})
        self.outbox.add("update", run_id, {k: v for k, v in final.items() if v is not None})

    def _start_supervisor(self, supervisor: RunSupervisor) -> None:
        self._supervisors[supervisor.run_id] = supervisor
        if self.stopping.is_set():
            supervisor.request_cancel("agent stopping")

        def body() -> None:
            try:
                supervisor.run()
            except Exception:
                log.exception("supervising run %s failed", supervisor.run_id)
            finally:
                self._supervisors.pop(supervisor.run_id, None)

        self._backup_thread = threading.Thread(target=body, name=f"run-{supervisor.run_id}")
        self._backup_thread.start()

    def qemu_settings(self) -> dict[str, Any]:
        q = self.config.qemu
        return {"qmp_glob": q.qmp_glob, "qga_name": q.qga_name, "scratch_dir": q.scratch_dir}

    def hyperv_settings(self) -> dict[str, Any]:
        return asdict(self.config.hyperv)

    # --- commands -------------------------------------------------------------------------------

    def _dispatch(self, command: AgentCommand) -> None:
        if command.type == "cancel":
            supervisor = self._supervisors.get(command.run_id or -1)
            if supervisor is not None:
                supervisor.request_cancel("cancel requested by user", by_server=True)
            return
        self._commands.put(command)

    def _command_loop(self) -> None:
        while (command := self._commands.get()) is not None:
            try:
                commands.execute(self, command)
            except Exception:
                log.exception("command %s (%s) failed", command.command_id, command.type)

    def run_engine_for_command(self, task: EngineTask, kind: str) -> dict[str, Any]:
        """A restore run from a command: supervised like a backup, in the command thread."""
        assert task.run_id is not None
        attempt = self.ledger.start(task.run_id, kind)
        reporter = RunReporter(self.client, self.outbox, task.run_id, attempt)
        supervisor = RunSupervisor(task, reporter, self.ledger, kind)
        self._supervisors[task.run_id] = supervisor
        try:
            return supervisor.run()
        finally:
            self._supervisors.pop(task.run_id, None)

    def complete(
        self, command: AgentCommand, status: str, result: Any = None, error: str | None = None
    ) -> None:
        if command.command_id is None:
            return
        data = {
            "command_id": command.command_id,
            "status": status,
            "result": result,
            "error": error,
        }
        self.outbox.add("command", 0, data)
        deliver(self.client, self.outbox)

    def _maybe_report_volumes(self) -> None:
        now = time.monotonic()
        if now < self._next_volumes:
            return
        self._next_volumes = now + VOLUMES_EVERY_S
        from e3backup.agent.inventory import volumes

        self.client.report_volumes(volumes())
