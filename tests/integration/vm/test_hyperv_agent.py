"""The agent's Hyper-V path against the real server services (SQLite): the RCT ids a backup
commits travel with the run's results into the server's backup point and come back with the
next run, so a reinstalled agent (its host state file gone) continues incrementally; a wrong
or foreign record from the server means a full read with the reason. The VM inventory has
the shape report_vms stores. Hyper-V itself is the recorded exchanges (fixtures/hyperv)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import PASSWORD, KiB, MiB, init_repo, restored
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from e3backup.agent import inventory
from e3backup.agent.handlers import hyperv
from e3backup.agent.run_context import EngineTask, RunContext
from e3backup.core.cancel import CancelToken
from e3backup.server.crypto import SecretBox
from e3backup.server.db.engine import session_scope
from e3backup.server.db.models import Agent, BackupPoint, Job, Run, Vm, VmDisk
from e3backup.server.schemas.agent import ReportVms
from e3backup.server.schemas.runs import RunUpdate
from e3backup.server.services import backup_points, claims, vms
from e3backup.sources.hypervisors.hyperv import records
from fixtures.hyperv_host import HostDisks, Replay, load
from fixtures.server_db import make_job, make_run, make_tenant_agent, migrated_factory

VM_ID = "9e479325-c193-45e2-a918-5a09a06ff251"
OS_DISK = r"C:\ClusterStorage\Volume1\Hyper-V\Web & DB 01\Virtual Hard Disks\os disk.vhdx"
DATA_DISK = r"C:\ClusterStorage\Volume1\Hyper-V\Web & DB 01\Virtual Hard Disks\data.vhdx"
DISKS = {"scsi0-0": OS_DISK, "scsi0-1": DATA_DISK}


@dataclass
class World:
    """One Hyper-V host (recorded answers over VhdxWriter disks), one server database, one
    hyperv job choosing the VM by name, a local repository."""

    tmp: Path
    factory: sessionmaker[Session]
    host: HostDisks
    replay: Replay
    agent_id: int = 0
    job_id: int = 0
    box: SecretBox = field(default_factory=lambda: SecretBox(os.urandom(32)))

    @property
    def state_file(self) -> Path:
        return self.tmp / "agent-state" / records.STATE_FILE

    def report_inventory(self) -> list[dict[str, Any]]:
        settings = {"state_dir": str(self.state_file.parent)}
        found = inventory.list_vms({}, settings, "win32", self.replay)
        body = ReportVms.model_validate({"vms": found})  # the server's request schema
        with session_scope(self.factory) as db:
            vms.report_vms(db, db.get_one(Agent, self.agent_id), body.vms)
        return found

    def backup(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """One run: next_run's payload → the agent's hyperv handler → the results recorded."""
        with session_scope(self.factory) as db:
            agent = db.get_one(Agent, self.agent_id)
            job = db.get_one(Job, self.job_id)
            run_id = make_run(db, job, status="starting").id
            payload = claims.run_payload(db, self.box, agent, db.get_one(Run, run_id), False)
        payload["repository_password"] = PASSWORD
        hyperv_settings = {"state_dir": str(self.state_file.parent), "job_timeout_s": 60.0}
        task = EngineTask("backup", run_id, payload, hyperv=hyperv_settings)
        sent: list[tuple[str, dict[str, Any]]] = []
        ctx = RunContext(task, sent.append, CancelToken())
        out = hyperv.run_with(task, ctx, self.replay, self.host.mapper)
        with session_scope(self.factory) as db:
            run = db.get_one(Run, run_id)
            run.status, run.vm_results_json = out["status"], out["vm_results"]
            backup_points.record_for_run(db, run, RunUpdate(run_id=run_id))
        return out, [m for kind, m in sent if kind == "event"]

    def last_point(self) -> BackupPoint:
        with session_scope(self.factory) as db:
            point = db.scalars(select(BackupPoint).order_by(BackupPoint.id.desc())).first()
            assert point is not None
            db.expunge(point)
            return point

    def set_point_tokens(self, tokens: dict[str, str]) -> None:
        with session_scope(self.factory) as db:
            point = db.scalars(select(BackupPoint).order_by(BackupPoint.id.desc())).first()
            assert point is not None
            point.change_tokens_json = tokens


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    host = HostDisks(tmp_path / "host", {OS_DISK: 32 * MiB, DATA_DISK: 16 * MiB})
    host.write(OS_DISK, 0, os.urandom(3 * MiB))
    host.write(DATA_DISK, 8 * MiB, os.urandom(MiB))
    engine, factory = migrated_factory(f"sqlite:///{tmp_path / 'server.db'}")
    init_repo(tmp_path / "repo")
    w = World(tmp_path, factory, host, Replay(load("host", "chain"), host.on_call))
    with session_scope(factory) as db:
        _tenant, agent = make_tenant_agent(db)
        repo = str(tmp_path / "repo")
        job = make_job(
            db,
            agent,
            engine="hyperv",
            vms_json=["Web & DB 01"],
            dest_local_path=repo,
            retention_json={"keep_last": 1},
        )
        w.agent_id, w.job_id = agent.id, job.id
    try:
        yield w
    finally:
        engine.dispose()


def plan_reasons(events: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    plans = [e["params"] for e in events if e["message_id"] == "HYPERV_DISK_PLAN"]
    return {p["disk"]: (p["read_plan"], p.get("reason", "")) for p in plans}


def test_reinstalled_agent_continues_incrementally_from_the_servers_rct_ids(
    world: World,
) -> None:
    world.report_inventory()
    out1, _ = world.backup()
    [r1] = out1["vm_results"]
    assert (out1["status"], r1["backup_type"]) == ("success", "Full"), r1
    point1 = world.last_point()
    # The server keeps, per disk, recovery snapshot S1 → reference point RP1 + its RCT id.
    kept = {k: records.decode_record(v) for k, v in (point1.change_tokens_json or {}).items()}
    s1 = "Microsoft:0B1D5C2E-3333-4F00-9000-000000000001"
    assert kept == {
        "scsi0-0": (s1, "Microsoft:RP-7E1A0001", "rctX:6c1f4a2e-5b7d-4e21-9a3c-1d2e3f405061:1"),
        "scsi0-1": (s1, "Microsoft:RP-7E1A0001", "rctX:0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d:1"),
    }
    assert point1.vm_id is not None

    world.state_file.unlink()  # the agent is reinstalled: its Hyper-V state is gone
    world.host.write(OS_DISK, 2 * MiB + 4 * KiB, os.urandom(8 * KiB))
    world.host.write(OS_DISK, 20 * MiB + 64 * KiB, os.urandom(128 * KiB))
    oracle = {name: world.host.content(path) for name, path in DISKS.items()}
    out2, events2 = world.backup()
    [r2] = out2["vm_results"]
    assert (out2["status"], r2["backup_type"]) == ("success", "Incremental"), plan_reasons(events2)
    queried = [p["limit"] for op, p in world.replay.calls if op == "get-virtual-disk-changes"]
    assert set(queried) == {ids[2] for ids in kept.values() if ids}
    assert r2["disk_manifests"]["scsi0-0"]["bytes_read"] == 4 * MiB  # only RCT's ranges
    assert r2["disk_manifests"]["scsi0-1"]["bytes_read"] == 0
    point2 = world.last_point()
    assert point2.backup_type == "Incremental" and point2.parent_backup_id == point1.id
    kept2 = [records.decode_record(v) for v in (point2.change_tokens_json or {}).values()]
    assert {ids[1] for ids in kept2 if ids} == {"Microsoft:RP-7E1A0002"} and len(kept2) == 2
    for name in DISKS:
        out = world.tmp / f"restore-{name}.raw"
        assert restored(world.tmp / "repo", r2["snapshot_id"], name, out) == oracle[name]
    # The job keeps its last backup only: the Full was forgotten after the Incremental.
    assert [p.name for p in (world.tmp / "repo" / "snapshots").iterdir()] == [r2["snapshot_id"]]


def test_wrong_or_foreign_rct_ids_from_the_server_mean_a_full_read_with_the_reason(
    world: World,
) -> None:
    out1, _ = world.backup()
    assert out1["vm_results"][0]["backup_type"] == "Full"
    kept = world.last_point().change_tokens_json or {}
    s1, rp1, _rct = records.decode_record(kept["scsi0-0"]) or ("", "", "")
    foreign_id = "rctX:deadbeef-0000-4000-8000-000000000000:9"
    world.set_point_tokens(
        {
            "scsi0-0": records.encode_record(s1, rp1, foreign_id),
            "scsi0-1": records.encode_record(s1, "Microsoft:RP-OF-ANOTHER-VM", "rctX:x:1"),
        }
    )
    world.state_file.unlink()
    out2, events2 = world.backup()
    [r2] = out2["vm_results"]
    assert (out2["status"], r2["backup_type"]) == ("success", "Full"), r2
    reasons = plan_reasons(events2)
    assert reasons["scsi0-0"][0] == "full"
    assert (
        f"RCT id {foreign_id} (from the server) of disk scsi0-0 is not in reference "
        in (reasons["scsi0-0"][1])
    )
    assert reasons["scsi0-1"][0] == "full"
    assert (
        "Microsoft:RP-OF-ANOTHER-VM (from the server) is not one of this VM's"
        in (reasons["scsi0-1"][1])
    )
    assert not [op for op, _p in world.replay.calls if op == "get-virtual-disk-changes"]


def test_inventory_reports_hyperv_vms_in_the_shape_the_server_stores(world: World) -> None:
    assert inventory.list_vms({}, {}, "linux", world.replay) == []  # not Windows: no Hyper-V
    [vm] = world.report_inventory()
    assert (vm["vm_guid"], vm["vm_name"], vm["hypervisor"]) == (VM_ID, "Web & DB 01", "hyperv")
    assert (vm["state"], vm["generation"], vm["rct_enabled"]) == ("Running", 2, True)
    assert vm["skipped_disks"] == ["scsi0-2"]  # the pass-through disk
    with session_scope(world.factory) as db:
        [row] = db.scalars(select(Vm).where(Vm.agent_id == world.agent_id)).all()
        assert (row.vm_uuid, row.name, row.hypervisor) == (VM_ID, "Web & DB 01", "hyperv")
        assert (row.state, row.generation, row.change_tracking) == ("Running", "2", True)
        disks = db.scalars(select(VmDisk).where(VmDisk.vm_id == row.id).order_by(VmDisk.id))
        got = [
            (d.disk_name, d.disk_path, d.controller_type, d.vhd_format, d.size_bytes) for d in disks
        ]
    assert got == [
        ("scsi0-0", OS_DISK, "SCSI", "VHDX", 32 * MiB),
        ("scsi0-1", DATA_DISK, "SCSI", "VHDX", 16 * MiB),
    ]
