"""Ending a backup of one QEMU VM: the one teardown both the engine and its guardian run.

`TeardownPlan` names everything a backup creates (our exports, NBD server, block jobs, fleecing
nodes, scratch files, the NBD socket, a possibly frozen guest) and the bitmap rotations to undo
unless the tokens were committed. The engine runs it on success, failure and cancellation; the
guardian child runs the same code when the engine died without saying it was done.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e3backup.core.errors import E3Error
from e3backup.sources.hypervisors.base import HypervisorError
from e3backup.sources.hypervisors.qemu import bitmaps
from e3backup.sources.hypervisors.qemu.guest_agent import GuestAgent, GuestAgentError
from e3backup.sources.hypervisors.qemu.qmp import QmpClient, QmpError

log = logging.getLogger(__name__)

FLEECE = "e3b-fl-"
EXPORT = "e3b-exp-"
JOB = "e3b-job-"
WAIT_S = 30.0


@dataclass
class TeardownPlan:
    qmp: str
    qga: str | None
    scratch_dir: str
    scratch_glob: str
    socket: str
    # (node, old token or None, new token): undone unless committed
    rotations: list[tuple[str, str | None, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "qmp": self.qmp,
            "qga": self.qga,
            "scratch_dir": self.scratch_dir,
            "scratch_glob": self.scratch_glob,
            "socket": self.socket,
            "rotations": [list(r) for r in self.rotations],
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> TeardownPlan:
        return cls(
            str(doc["qmp"]),
            str(doc["qga"]) if doc.get("qga") else None,
            str(doc["scratch_dir"]),
            str(doc["scratch_glob"]),
            str(doc["socket"]),
            [(str(n), str(o) if o else None, str(w)) for n, o, w in doc.get("rotations", [])],
        )


def stop_reading(qmp: QmpClient, plan: TeardownPlan) -> None:
    """Exports, NBD server, jobs, scratch nodes and files, the NBD socket; thaw the guest."""
    qga = Path(plan.qga) if plan.qga else None
    _quietly(remove_leftovers, qmp, Path(plan.scratch_dir), plan.scratch_glob, qga, False)
    Path(plan.socket).unlink(missing_ok=True)


def undo_rotations(qmp: QmpClient, rotations: list[tuple[str, str | None, str]]) -> None:
    """The failure path for tokens: the parent's token stays valid (the new bitmap's writes
    merge back into it), or, without a usable old token, the new bitmap goes (next is Full)."""
    for node, old, new in rotations:
        _quietly(_undo_rotation, qmp, node, old, new)


def _undo_rotation(qmp: QmpClient, node: str, old: str | None, new: str) -> None:
    present = {b.name for b in bitmaps.node_bitmaps(qmp, node)}
    if new not in present:
        return  # the rotation never happened
    if old is None:
        bitmaps.remove(qmp, node, new)
    elif old in present:
        bitmaps.rollback(qmp, node, old, new)
    # old gone but new present: the commit already removed the old token; keep the new one


def abandon(qmp: QmpClient, plan: TeardownPlan) -> None:
    """A backup that will not commit: stop reading, then undo the token rotations."""
    stop_reading(qmp, plan)
    undo_rotations(qmp, plan.rotations)


def remove_leftovers(
    qmp: QmpClient,
    scratch_dir: Path,
    scratch_glob: str,
    qga: Path | None,
    leftovers: bool = True,
) -> list[str]:
    """Remove exports, NBD server, jobs, scratch nodes and files of ours; thaw a frozen guest.

    Safe to call any time no backup of this VM is running (a killed backup leaves these)."""
    removed: list[str] = []
    exports = [e["id"] for e in qmp.execute("query-block-exports") if e["id"].startswith(EXPORT)]
    for export_id in exports:
        _quietly(qmp.execute, "block-export-del", {"id": export_id, "mode": "hard"})
        removed.append(export_id)
    _wait(lambda: not any(e["id"].startswith(EXPORT) for e in qmp.execute("query-block-exports")))
    if exports or not qmp.execute("query-block-exports"):
        with contextlib.suppress(QmpError):  # no server running
            qmp.execute("nbd-server-stop")
    jobs = [j["device"] for j in qmp.execute("query-block-jobs") if j["device"].startswith(JOB)]
    for job in jobs:
        _quietly(qmp.execute, "block-job-cancel", {"device": job, "force": True})
        removed.append(job)
    _wait(lambda: not any(j["device"].startswith(JOB) for j in qmp.execute("query-block-jobs")))
    for node in qmp.execute("query-named-block-nodes", {"flat": True}):
        name = str(node.get("node-name", ""))
        if name.startswith(FLEECE):
            _quietly(qmp.execute, "blockdev-del", {"node-name": name})
            removed.append(name)
    for path in scratch_dir.glob(scratch_glob):
        path.unlink(missing_ok=True)
    if qga is not None:
        try:
            with GuestAgent(qga) as agent:
                if agent.freeze_status() == "frozen":
                    agent.thaw()
                    removed.append("guest freeze")
        except GuestAgentError:
            pass
    if removed and leftovers:
        log.warning("removed leftovers of an earlier backup: %s", ", ".join(removed))
    return removed


def _wait(done: Any, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise HypervisorError("QEMU did not finish tearing down the backup in time")
        time.sleep(0.05)


def _quietly(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except E3Error as exc:
        log.warning("cleanup step failed: %s", exc)
