"""test_destination: reach and authenticate to the job's repository destination, report the
diagnosis (preflight steps, repository found or not, snapshot count)."""

from __future__ import annotations

from typing import Any

from e3backup.agent import preflight
from e3backup.agent.destination import AWS_ENDPOINT, destination_of, open_destination_backend
from e3backup.agent.policy import parse_policy
from e3backup.agent.run_context import EngineTask, RunContext
from e3backup.agent.wire import JobContext
from e3backup.core.errors import E3Error, RepositoryNotFound
from e3backup.repo.repository import Repository


def run(task: EngineTask, ctx: RunContext) -> dict[str, Any]:
    job = JobContext.model_validate(task.job)
    dest = destination_of(job)
    result: dict[str, Any] = {"destination": dest.display, "kind": dest.kind}
    if dest.kind == "s3":
        probe = preflight.probe(dest.endpoint or AWS_ENDPOINT)
        result["preflight"] = {
            "ok": probe.ok,
            "steps": list(probe.steps),
            "diagnosis": probe.message_id or "ok",
        }
        if not probe.ok:
            return {"status": "failed", "error": probe.error, "result": result}
    try:
        backend = open_destination_backend(dest, parse_policy(job.policy_json))
        repo = Repository.open(backend, dest.password)
    except RepositoryNotFound:
        result.update(
            reachable=True,
            repository=False,
            diagnosis="reachable; no repository yet (created by the first backup)",
        )
        return {"status": "success", "result": result}
    except E3Error as exc:
        result.update(diagnosis=str(exc))
        return {"status": "failed", "error": str(exc), "result": result}
    result.update(
        reachable=True,
        repository=True,
        authenticated=True,
        snapshot_count=len(repo.snapshot_ids()),
        diagnosis="ok",
    )
    return {"status": "success", "result": result}
