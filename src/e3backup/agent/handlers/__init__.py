"""One handler per run engine or command kind, running in the engine process (seed runRun
switch): disk_image, kvm, hyperv (Windows hosts only), files/sync (not available yet), restore,
maintenance, test_destination."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from e3backup.agent.run_context import EngineTask, RunContext
from e3backup.core.errors import CancelledError, E3Error


class EngineUnavailable(E3Error):
    """The run asks for an engine this agent or host does not have."""


Handler = Callable[[EngineTask, RunContext], dict[str, Any]]


def _unavailable(message: str) -> Handler:
    def handler(_task: EngineTask, _ctx: RunContext) -> dict[str, Any]:
        raise EngineUnavailable(message)

    return handler


def _handlers() -> dict[str, Handler]:
    from e3backup.agent.handlers import (
        disk_image,
        hyperv,
        kvm,
        maintenance,
        restore,
        test_destination,
    )

    return {
        "backup:disk_image": disk_image.run,
        "backup:kvm": kvm.run,
        "backup:hyperv": hyperv.run if hyperv.supported() else _unavailable(hyperv.UNSUPPORTED),
        "backup:files": _unavailable("the files engine is not available in this agent yet"),
        "backup:sync": _unavailable("the sync engine is not available in this agent yet"),
        "restore": restore.run,
        "maintenance": maintenance.run,
        "test_destination": test_destination.run,
    }


FAILURE_EVENTS = {"backup": "BACKUP_FAILED", "restore": "RESTORE_FAILED"}


def dispatch(task: EngineTask, ctx: RunContext) -> dict[str, Any]:
    engine = str(task.job.get("engine") or "")
    key = f"backup:{engine}" if task.kind == "backup" else task.kind
    handler = _handlers().get(key)
    try:
        if handler is None:
            raise EngineUnavailable(f"engine {engine!r} is not available in this agent")
        return handler(task, ctx)
    except CancelledError:
        raise
    except E3Error as exc:
        if task.kind in FAILURE_EVENTS:
            ctx.emit(FAILURE_EVENTS[task.kind], "error", error=str(exc))
        raise
