"""Issue 10's "Done when", end to end: a real server (SQLite) whose scheduler loop queues the
runs of an hourly `kvm` job, a real `e3backup agent run` process, the tiny QEMU guest with its
guest agent, and a real SeaweedFS S3 repository. Full, then Incremental after the guest writes;
progress read through the client API while the run goes; events once each, in order; restores
to VHDX checked by `qemu-img check` and compared with the guest's disk at that backup, and a
VM restore where one disk cannot be written ends partial_success with per-disk events.

The scheduler's clock is moved by shifting what it stored (the job's next_run_at/last_slot_at
and the job's runs' scheduled_for) one hour into the past: to the scheduler that is exactly an
hour passing, and the slot it then owes is fired by its own loop, not by run-now."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

from agent_harness import (
    TERMINAL,
    Deployment,
    agent_id_of,
    configure_qemu,
    deployment,
    running_agent,
    wait_for,
)
from sqlalchemy import select

from e3backup.server.db.engine import make_engine, make_session_factory, session_scope
from e3backup.server.db.models import Job, Run

SCHEDULER = {"scheduler_tick_s": "1"}
CAPPED = {"bandwidth_limit_kbps": 1024, "compression": "none"}  # the Full takes seconds
BACKUP_ORDER = [
    "REPO_POLICY",
    "HYPERV_VM_STARTING",
    "HYPERV_CHECKPOINT_CREATED",
    "HYPERV_VM_COMPLETE",
    "HYPERV_BACKUP_COMPLETE",
]


def pass_one_hour(dep: Deployment, job_id: int) -> None:
    """Move the scheduler's clock an hour on for this job (see the module docstring)."""
    assert dep.server.db_url is not None
    engine = make_engine(dep.server.db_url)
    try:
        with session_scope(make_session_factory(engine)) as db:
            job = db.get(Job, job_id)
            assert job is not None and job.next_run_at is not None, "scheduler primed the job"
            hour = timedelta(hours=1)
            job.next_run_at -= hour
            job.last_slot_at = job.last_slot_at - hour if job.last_slot_at else None
            for run in db.scalars(select(Run).where(Run.job_id == job_id)):
                if run.scheduled_for is not None:
                    run.scheduled_for -= hour
    finally:
        engine.dispose()


def primed(dep: Deployment, job_id: int) -> bool:
    assert dep.server.db_url is not None
    engine = make_engine(dep.server.db_url)
    try:
        with session_scope(make_session_factory(engine)) as db:
            job = db.get(Job, job_id)
            return job is not None and job.next_run_at is not None
    finally:
        engine.dispose()


def scheduled_run(dep: Deployment, job_id: int, known: set[int]) -> dict[str, Any]:
    def new_run() -> dict[str, Any] | None:
        runs = dep.get("/api/v1/runs", job_id=job_id)["items"]
        fresh = [r for r in runs if r["id"] not in known]
        return fresh[0] if fresh else None

    run = wait_for(new_run, 60, f"the scheduler to queue a run of job {job_id}")
    assert run["trigger"] == "schedule" and run["scheduled_for"], run
    return run


def follow_progress(dep: Deployment, run_id: int) -> tuple[dict[str, Any], list[float]]:
    """The run's progress_pct as the client API shows it while it runs, until it ends."""
    seen: list[float] = []

    def ended() -> dict[str, Any] | None:
        run = dep.run(run_id)
        if run["progress_pct"] is not None:
            seen.append(run["progress_pct"])
        return run if run["status"] in TERMINAL else None

    return wait_for(ended, 600, f"run {run_id} to end"), seen


def assert_events_once_in_order(events: list[dict[str, Any]], expected: list[str]) -> None:
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert len({e["event_id"] for e in events}) == len(events), "an event arrived twice"
    keys = [(e["message_id"], json.dumps(e["params"], sort_keys=True)) for e in events]
    assert len(set(keys)) == len(keys), keys
    names = [e["message_id"] for e in events]
    assert [names.count(m) for m in expected] == [1] * len(expected), names
    assert [names.index(m) for m in expected] == sorted(names.index(m) for m in expected), names


def scheduled_backup(dep: Deployment, job_id: int, known: set[int]) -> list[float]:
    wait_for(lambda: primed(dep, job_id), 60, "the scheduler to prime the job")
    pass_one_hour(dep, job_id)
    run, progress = follow_progress(dep, scheduled_run(dep, job_id, known)["id"])
    assert run["status"] == "success", run
    assert progress and progress[-1] == 100.0, progress
    assert progress == sorted(progress), f"progress went backwards: {progress}"
    assert_events_once_in_order(dep.events(run["id"]), BACKUP_ORDER)
    known.add(run["id"])
    return progress


def restore(dep: Deployment, point_id: int, target: Path, **fields: Any) -> dict[str, Any]:
    body = {"backup_point_id": point_id, "target_path": str(target), "format": "vhdx", **fields}
    started = dep.post("/api/v1/restores", body)
    return dep.wait_status(started["restore_run_id"], timeout_s=300)


def assert_vhdx_equals(vhdx: Path, raw: Path) -> None:
    check = subprocess.run(["qemu-img", "check", "-f", "vhdx", str(vhdx)], capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    compare = subprocess.run(
        ["qemu-img", "compare", "-f", "vhdx", "-F", "raw", str(vhdx), str(raw)],
        capture_output=True,
    )
    assert compare.returncode == 0, compare.stdout + compare.stderr


def s3_destination(seaweed: Any) -> dict[str, Any]:
    return {
        "dest_type": "s3",
        "dest_endpoint": seaweed.endpoint,
        "dest_bucket": f"kvm-e2e-{os.getpid()}",
        "dest_prefix": "vm1",
        "access_key": seaweed.access_key,
        "secret_key": seaweed.secret_key,
        "bucket_auto_create": True,
    }


def test_scheduled_kvm_backups_to_s3_and_vhdx_restores(
    tmp_path: Path, make_vm: Any, seaweed_server: Any
) -> None:
    vm = make_vm("vm1")
    with deployment(tmp_path, SCHEDULER) as dep:
        config = dep.enroll()
        configure_qemu(config, vm)
        agent_id = agent_id_of(config)
        with running_agent(config) as agent:
            listed = dep.post(f"/api/v1/agents/{agent_id}/refresh_vms")
            assert dep.wait_command(listed["id"])["status"] == "completed"
            vms = dep.get("/api/v1/vms")["items"]
            assert [v["vm_name"] for v in vms] == ["vm1"] and vms[0]["vm_guid"] == vm.uuid
            job = dep.create_job(
                agent_id,
                engine="kvm",
                vms=["vm1"],
                schedule_json={"type": "hourly", "minute": 0},
                policy_json=CAPPED,
                **s3_destination(seaweed_server),
            )
            known: set[int] = set()
            full_progress = scheduled_backup(dep, job["id"], known)
            assert min(full_progress) < 100.0, "the capped Full run was seen mid-way"
            at_full = vm.capture("vdb", tmp_path / "vdb-full.raw")
            vm.guest_write(4 * 1024 * 1024, os.urandom(128 * 1024))
            scheduled_backup(dep, job["id"], known)
            at_incremental = vm.capture("vdb", tmp_path / "vdb-incr.raw")
            points = sorted(dep.points(job["id"]), key=lambda p: p["id"])
            assert [p["backup_type"] for p in points] == ["Full", "Incremental"]
            assert {p["consistency_level"] for p in points} == {"Application"}

            latest = restore(dep, points[1]["id"], tmp_path / "incr", disk_filter=["vdb"])
            assert latest["status"] == "success", latest
            assert_events_once_in_order(
                dep.events(latest["id"]),
                [
                    "HYPERV_RESTORE_STARTING",
                    "HYPERV_RESTORE_DISK_STARTING",
                    "HYPERV_RESTORE_DISK_COMPLETE",
                    "HYPERV_RESTORE_COMPLETE",
                ],
            )
            assert_vhdx_equals(tmp_path / "incr" / "vdb.vhdx", at_incremental)

            target = tmp_path / "full"
            target.mkdir()
            (target / "vda.vhdx").write_bytes(b"kept")  # vda cannot be written: no overwrite
            partial = restore(dep, points[0]["id"], target)
            assert partial["status"] == "partial_success", partial
            assert (target / "vda.vhdx").read_bytes() == b"kept"
            assert_vhdx_equals(target / "vdb.vhdx", at_full)
            events = dep.events(partial["id"])
            by_id = {e["message_id"]: e["params"] for e in events}
            assert by_id["HYPERV_RESTORE_DISK_FAILED"]["disk_name"] == "vda", events
            assert "HYPERV_RESTORE_FAILED" in by_id and "HYPERV_RESTORE_COMPLETE" not in by_id
            progress = [e for e in events if e["message_id"] == "HYPERV_RESTORE_DISK_PROGRESS"]
            assert progress[-1]["params"]["bytes_done"] == at_full.stat().st_size, progress
        assert seaweed_server.secret_key not in agent.log()
