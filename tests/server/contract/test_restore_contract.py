"""VM backups record one backup point per VM; the next run carries each VM's change tokens; a
restore flows from the client API to a queued command delivered once to the agent and back to
a finished restore run. Seed 001's restore errors."""

from __future__ import annotations

from typing import Any

from contract_world import REPO_PASSWORD, Agent, Tenant, assert_no_secret, make_tenant

DISK_A = "/var/lib/vms/web/disk0.qcow2"
INVENTORY = [
    {
        "vm_guid": "uuid-web",
        "vm_name": "web",
        "state": "running",
        "generation": "q35",
        "rct_enabled": True,
        "disks": [{"disk_path": DISK_A, "size_bytes": 1024}],
    },
    {
        "vm_guid": "uuid-db",
        "vm_name": "db",
        "state": "running",
        "disks": [{"disk_path": "/var/lib/vms/db/disk0.qcow2", "size_bytes": 2048}],
    },
]


def _vm_result(vm_id: str, name: str, disk: str, snapshot: str) -> dict[str, Any]:
    return {
        "vm_id": vm_id,
        "vm_name": name,
        "backup_type": "Full",
        "snapshot_id": snapshot,
        "disk_manifests": {disk: {"chunks": 1}},
        "rct_ids": {disk: f"bitmap-{snapshot}"},
        "total_bytes": 1024,
        "changed_bytes": 1024,
        "consistency_level": "Application",
        "duration_seconds": 1.5,
        "warnings": [],
        "status": "success",
    }


def _backup_two_vms(acme: Tenant, agent: Agent) -> tuple[dict[str, Any], int]:
    assert agent.post("report_vms", {"vms": INVENTORY}).is_success
    job = acme.create_job(
        agent,
        engine="kvm",
        vms=["uuid-web", "db"],
        dest_type="local",
        dest_local_path="/srv/repo",
        disk_source_volume="",
    )
    run = acme.run_now(job["id"])
    payload = agent.post("next_run").json()
    assert [(v["vm_name"], v["rct_ids"]) for v in payload["vms"]] == [("web", {}), ("db", {})]
    results = [
        _vm_result("uuid-web", "web", DISK_A, "snap-web-1"),
        _vm_result("uuid-db", "db", "/var/lib/vms/db/disk0.qcow2", "snap-db-1"),
    ]
    assert agent.post("update_run", {"run_id": run["id"], "status": "running"}).is_success
    done = {"run_id": run["id"], "status": "success", "vm_results": results}
    assert agent.post("update_run", done).json()["status"] == "success"
    return job, run["id"]


def test_vm_backup_points_and_restore_round_trip(make_server) -> None:
    server = make_server()
    acme = make_tenant(server, "acme")
    agent = acme.enroll()
    job, _ = _backup_two_vms(acme, agent)

    points = acme.api("GET", "/backup_points", params={"job_id": job["id"]}).json()
    assert points["total"] == 2
    web = next(p for p in points["items"] if p["source_name"] == "web")
    assert web["backup_type"] == "Full" and web["consistency_level"] == "Application"
    assert web["is_restorable"] and web["restore_chain"] == ["snap-web-1"]
    vm_page = acme.api("GET", f"/vms/{web['vm_id']}/backup_points", params={"type": "full"}).json()
    assert vm_page["vm"]["vm_name"] == "web" and vm_page["disks"][0]["disk_path"] == DISK_A
    assert [p["id"] for p in vm_page["backup_points"]] == [web["id"]]

    second = acme.run_now(job["id"])
    payload = agent.post("next_run").json()
    assert payload["run_id"] == second["id"]
    web_entry = next(v for v in payload["vms"] if v["vm_name"] == "web")
    assert web_entry["rct_ids"] == {DISK_A: "bitmap-snap-web-1"}
    assert web_entry["last_snapshot_id"] == "snap-web-1"

    started = acme.api(
        "POST",
        "/restores",
        json={"backup_point_id": web["id"], "target_path": "/restore/web", "format": "qcow2"},
    )
    assert started.status_code == 201, started.text
    restore = started.json()
    assert restore["vm_name"] == "web" and restore["disks_to_restore"] == 1
    run_id, command_id = restore["restore_run_id"], restore["command_id"]
    assert agent.post("next_run").status_code == 204, "restore runs travel as commands"

    delivered = agent.post("poll_commands").json()["commands"]
    assert [c["command_id"] for c in delivered] == [command_id]
    command = delivered[0]
    assert command["type"] == "hyperv_restore" and command["run_id"] == run_id
    assert command["payload"]["disk_manifests"] == {DISK_A: {"chunks": 1}}
    assert command["payload"]["snapshot_id"] == "snap-web-1"
    assert command["payload"]["format"] == "qcow2"
    assert command["job"]["repository_password"] == REPO_PASSWORD
    assert agent.post("poll_commands").json()["commands"] == [], "delivered once"
    assert acme.api("GET", f"/runs/{run_id}").json()["status"] == "starting"

    assert agent.post("update_run", {"run_id": run_id, "status": "running"}).is_success
    assert agent.post(
        "complete_command", {"command_id": command_id, "result": {"ok": 1}}
    ).is_success
    assert agent.post("complete_command", {"command_id": command_id}).is_success  # a retry
    assert agent.post("update_run", {"run_id": run_id, "status": "success"}).is_success
    finished = acme.api("GET", f"/runs/{run_id}").json()
    assert finished["status"] == "success" and finished["run_type"] == "hyperv_restore"
    assert finished["finished_at"] is not None
    assert acme.api("GET", f"/commands/{command_id}").json()["status"] == "completed"
    assert_no_secret(acme.api("GET", f"/commands/{command_id}").text)


def test_restore_errors_of_seed_001(make_server) -> None:
    server = make_server()
    acme = make_tenant(server, "acme")
    agent = acme.enroll()
    _backup_two_vms(acme, agent)
    point_id = acme.api("GET", "/backup_points").json()["items"][0]["id"]
    cases = [
        ({"target_path": "/r"}, 422, "backup_point_id is required"),
        ({"backup_point_id": 999_999, "target_path": "/r"}, 404, "Backup point not found"),
        (
            {"backup_point_id": point_id, "target_path": "/r", "disk_filter": ["x"]},
            422,
            "No disks selected",
        ),
        ({"backup_point_id": point_id, "target_path": "/r", "speed": 1}, 422, "unknown field"),
    ]
    for body, status, message in cases:
        answer = acme.api("POST", "/restores", json=body)
        assert (answer.status_code, message in answer.json()["detail"]) == (status, True), body
