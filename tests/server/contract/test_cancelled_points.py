"""Backup points of a VM run that did not fully succeed, through the agent API against a live
server: a run cancelled (or failed) after some VMs finished keeps exactly those VMs' points;
a VM that was cancelled, failed, or reported no snapshot gets none."""

from __future__ import annotations

from typing import Any

from contract_world import Agent, Tenant, make_tenant

VMS = ["alpha", "beta", "gamma", "delta"]


def _saved(name: str) -> dict[str, Any]:
    disk = f"/var/lib/vms/{name}/disk0.qcow2"
    return {
        "vm_id": f"uuid-{name}",
        "vm_name": name,
        "backup_type": "Full",
        "snapshot_id": f"snap-{name}",
        "disk_manifests": {disk: {"chunks": 1}},
        "total_bytes": 1024,
        "status": "success",
    }


def _vm_job(acme: Tenant, agent: Agent, name: str) -> int:
    inventory = [{"vm_guid": f"uuid-{vm}", "vm_name": vm, "disks": []} for vm in VMS]
    assert agent.post("report_vms", {"vms": inventory}).is_success
    fields = {"engine": "kvm", "vms": VMS, "disk_source_volume": "", "name": name}
    job_id: int = acme.create_job(agent, **fields)["id"]
    return job_id


def _points(acme: Tenant, job_id: int) -> list[str]:
    items = acme.api("GET", "/backup_points", params={"job_id": job_id}).json()["items"]
    assert all(p["is_restorable"] for p in items)
    return sorted(p["source_name"] for p in items)


def _start(acme: Tenant, agent: Agent, job_id: int) -> int:
    run_id: int = acme.run_now(job_id)["id"]
    assert agent.post("next_run").json()["run_id"] == run_id
    assert agent.post("update_run", {"run_id": run_id, "status": "running"}).is_success
    return run_id


def test_cancelled_and_failed_vm_runs_keep_only_saved_vms(make_server) -> None:
    server = make_server()
    acme = make_tenant(server, "acme")
    agent = acme.enroll()
    job_id = _vm_job(acme, agent, "vms")

    run_id = _start(acme, agent, job_id)
    assert acme.api("POST", f"/runs/{run_id}/cancel").json()["cancel_requested"] is True
    polled = agent.post("poll_commands", {"run_id": run_id}).json()["commands"]
    assert [c["type"] for c in polled] == ["cancel"]
    results = [
        _saved("alpha"),
        _saved("beta"),
        {"vm_id": "uuid-gamma", "vm_name": "gamma", "status": "cancelled", "error": "cancelled"},
        {"vm_id": "uuid-delta", "vm_name": "delta", "status": "success"},  # no snapshot id
    ]
    done = {"run_id": run_id, "status": "cancelled", "vm_results": results}
    assert agent.post("update_run", done).json()["status"] == "cancelled"
    assert _points(acme, job_id) == ["alpha", "beta"]

    # a run that failed overall (say its retention step) still records the VM it saved
    run_id = _start(acme, agent, job_id)
    results = [
        {**_saved("gamma"), "snapshot_id": "snap-gamma-2"},
        {"vm_id": "uuid-delta", "vm_name": "delta", "status": "failed", "error": "disk gone"},
        {**_saved("alpha"), "status": "failed", "snapshot_id": "snap-alpha-partial"},
    ]
    done = {"run_id": run_id, "status": "failed", "error": "x", "vm_results": results}
    assert agent.post("update_run", done).json()["status"] == "failed"
    assert _points(acme, job_id) == ["alpha", "beta", "gamma"]
