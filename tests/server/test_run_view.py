"""The live page's reads (services/run_view.py) and the VMs page's newest point per source
(backup_points.latest_per_source) on SQLite and PostgreSQL: per-item states from the job's VM
list, the events and the final vm_results; a restore's disks; dedup savings; tenant scope."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from e3backup.server.db.base import utcnow
from e3backup.server.db.engine import session_scope
from e3backup.server.db.models import BackupPoint, RunEvent, Vm
from e3backup.server.services import backup_points, run_view
from e3backup.server.services.auth import Actor
from fixtures.server_db import db_factory, make_job, make_run, make_tenant_agent

__all__ = ["db_factory"]


def _event(db: Session, run_id: int, eid: str, message_id: str, **params: object) -> None:
    db.add(RunEvent(run_id=run_id, event_id=eid, ts=utcnow(), message_id=message_id,
                    params_json=params))  # fmt: skip


def test_item_states_follow_events_then_results(db_factory: sessionmaker[Session]) -> None:
    with session_scope(db_factory) as db:
        _tenant, agent = make_tenant_agent(db)
        db.add(Vm(tenant_id=agent.tenant_id, agent_id=agent.id, vm_uuid="u-a", name="alpha"))
        job = make_job(db, agent, vms_json=["u-a", "beta", "gamma"])
        run = make_run(db, job, status="running")
        states = {i.name: i.state for i in run_view.item_states(db, run)}
        assert states == {"alpha": "queued", "beta": "queued", "gamma": "queued"}  # uuid → name

        _event(db, run.id, "1", "HYPERV_VM_STARTING", vm_name="alpha")
        _event(db, run.id, "2", "HYPERV_VM_COMPLETE", vm_name="alpha")
        _event(db, run.id, "3", "HYPERV_VM_STARTING", vm_name="beta")
        _event(db, run.id, "4", "HYPERV_VM_FAILED", vm_name="beta", message="no space")
        _event(db, run.id, "5", "BACKUP_STARTING")
        db.flush()
        items = run_view.item_states(db, run)
        assert [(i.name, i.state, i.detail) for i in items] == [
            ("alpha", "success", ""),
            ("beta", "failed", "no space"),
            ("gamma", "queued", ""),
        ]
        run.vm_results_json = [
            {"vm_name": "alpha", "status": "success", "backup_type": "Full",
             "consistency_level": "Application"},
            {"vm_name": "gamma", "status": "cancelled"},
        ]  # fmt: skip
        final = {i.name: (i.state, i.detail) for i in run_view.item_states(db, run)}
        assert final["alpha"] == ("success", "Full, Application-consistent")
        assert final["gamma"] == ("cancelled", "")
        assert final["beta"] == ("failed", "no space")

        chosen = {"disk_filter": ["C:\\VMs\\d0.vhdx", "/img/d1.qcow2"]}
        restore = make_run(
            db, job, run_type="hyperv_restore", status="running", restore_json=chosen
        )
        _event(db, restore.id, "r1", "HYPERV_RESTORE_DISK_STARTING", disk_name="d1.qcow2")
        db.flush()
        disks = [(i.name, i.state) for i in run_view.item_states(db, restore)]
        assert disks == [("d0.vhdx", "queued"), ("d1.qcow2", "running")]

        files = make_run(db, make_job(db, agent, engine="files", vms_json=None), status="running")
        assert run_view.item_states(db, files) == []


def test_dedup_savings() -> None:
    assert run_view.dedup_savings(None, 5) is None
    assert run_view.dedup_savings(100, None) is None
    assert run_view.dedup_savings(100, 20) == 0.8
    assert run_view.dedup_savings(100, 150) == 0.0  # uploads with overhead never read negative


def test_latest_point_per_source_is_tenant_scoped(db_factory: sessionmaker[Session]) -> None:
    with session_scope(db_factory) as db:
        tenant, agent = make_tenant_agent(db)
        job = make_job(db, agent, engine="disk_image", vms_json=None)
        for source in ("/dev/sda", "/dev/sdb", "/dev/sda"):
            run = make_run(db, job, status="success")
            point = BackupPoint(tenant_id=tenant.id, job_id=job.id, run_id=run.id)
            point.agent_id, point.engine, point.source_key = agent.id, "disk_image", source
            db.add(point)
            db.flush()
        _other, other_agent = make_tenant_agent(db, name="other")
        theirs = make_job(db, other_agent, engine="disk_image", vms_json=None)
        db.add(BackupPoint(tenant_id=other_agent.tenant_id, job_id=theirs.id,
                           run_id=make_run(db, theirs).id, engine="disk_image",
                           source_key="/dev/sda"))  # fmt: skip
        db.flush()
        actor = Actor("user", None, tenant.id, frozenset({tenant.id}), "viewer", "t@x.test")
        latest = backup_points.latest_per_source(db, actor)
        assert [(p.source_key, p.id) for p in latest] == [
            ("/dev/sda", max(p.id for p in latest)),
            ("/dev/sdb", min(p.id for p in latest)),
        ]
        assert all(p.tenant_id == tenant.id for p in latest)
