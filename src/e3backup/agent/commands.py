"""Commands beside the backup run (seed executePendingCommand): restore / hyperv_restore (a
supervised restore run), maintenance_quick/full and test_destination (in an engine process),
list_vms, browse_directory. Unknown types are completed as failed with the reason."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from e3backup.agent import browse, inventory
from e3backup.agent.client import AgentClient
from e3backup.agent.engine_process import EngineProcess
from e3backup.agent.run_context import EngineTask
from e3backup.agent.wire import AgentCommand


class Runner(Protocol):
    """What a command needs of the poll loop (agent/runner.py), which imports this module."""

    client: AgentClient

    def qemu_settings(self) -> dict[str, Any]: ...

    def hyperv_settings(self) -> dict[str, Any]: ...

    def run_engine_for_command(self, task: EngineTask, kind: str) -> dict[str, Any]: ...

    def complete(
        self, command: AgentCommand, status: str, result: Any = None, error: str | None = None
    ) -> None: ...


log = logging.getLogger(__name__)
OK_STATUSES = ("success", "warning", "partial_success")


def _job(command: AgentCommand) -> dict[str, Any]:
    return command.job.model_dump() if command.job is not None else {}


def run_without_run(task: EngineTask) -> dict[str, Any]:
    """An engine process whose events only go to the agent's log (no run to attach them to)."""
    process = EngineProcess(task)
    process.start()
    for message in process.messages(1.0):
        if message is None:
            continue
        kind, body = message
        if kind == "result":
            return body
        if kind == "event":
            log.info("%s: %s %s", task.kind, body["message_id"], body.get("params"))
    return {"status": "failed", "error": "no result from the engine"}


def execute(runner: Runner, command: AgentCommand) -> None:
    kind = command.type
    log.info("command %s: %s", command.command_id, kind)
    payload = {**command.payload, "command_type": kind}
    if kind in ("restore", "hyperv_restore"):
        if command.run_id is None:
            runner.complete(command, "failed", error="restore command without a restore run")
            return
        task = EngineTask("restore", command.run_id, _job(command), payload)
        final = runner.run_engine_for_command(task, "restore")
        status = "completed" if final["status"] in OK_STATUSES else "failed"
        runner.complete(
            command,
            status,
            {"status": final["status"], **(final.get("result") or {})},
            final.get("error"),
        )
    elif kind in ("maintenance_quick", "maintenance_full", "test_destination"):
        engine_kind = "test_destination" if kind == "test_destination" else "maintenance"
        result = run_without_run(EngineTask(engine_kind, None, _job(command), payload))
        status = "completed" if result.get("status") in OK_STATUSES else "failed"
        runner.complete(command, status, result.get("result"), result.get("error"))
    elif kind == "list_vms":
        vms = inventory.list_vms(runner.qemu_settings(), runner.hyperv_settings())
        runner.client.report_vms(vms, command.command_id)
    elif kind == "browse_directory":
        listing = browse.browse(str(command.payload.get("path") or ""))
        if command.command_id is not None:
            runner.client.report_browse(command.command_id, listing)
    else:
        runner.complete(command, "failed", error=f"command {kind!r} is not supported by this agent")
