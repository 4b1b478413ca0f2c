"""A kvm job with the tiny QEMU guest (real QMP, real guest agent) through a real server and a
real agent process: inventory (list_vms), Full then Incremental backups with Application
consistency, a disk restore equal to the guest's disk; and the commands beside runs: browse
and repository maintenance."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from agent_harness import Deployment, agent_id_of, deployment, running_agent, wait_for

from e3backup.agent.config import load_config, save_config
from integration.cli_harness import sha256


def configure_qemu(config_path: Path, vm: Any) -> None:
    config = load_config(config_path)
    config.qemu.qmp_glob = str(vm.qmp_path)
    config.qemu.qga_name = vm.qga_path.name
    config.qemu.scratch_dir = str(vm.dir / "scratch")
    save_config(config)


def wait_command(dep: Deployment, command_id: int) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        command: dict[str, Any] = dep.get(f"/api/v1/commands/{command_id}")
        return command if command["status"] in ("completed", "failed") else None

    return wait_for(done, 120, f"command {command_id}")


def test_kvm_full_incremental_and_restore(tmp_path: Path, make_vm: Any) -> None:
    vm = make_vm("vm1")
    with deployment(tmp_path) as dep:
        config = dep.enroll()
        configure_qemu(config, vm)
        agent_id = agent_id_of(config)
        with running_agent(config):
            listed = dep.post(f"/api/v1/agents/{agent_id}/refresh_vms")
            assert wait_command(dep, listed["id"])["status"] == "completed"
            vms = dep.get("/api/v1/vms")["items"]
            assert [v["vm_name"] for v in vms] == ["vm1"] and vms[0]["vm_guid"] == vm.uuid
            job = dep.create_job(
                agent_id,
                engine="kvm",
                vms=["vm1"],
                dest_type="local",
                dest_local_path=str(tmp_path / "repo"),
            )
            first = dep.wait_status(dep.run_now(job["id"]), timeout_s=300)
            assert first["status"] == "success", first
            ids = dep.message_ids(first["id"])
            assert "HYPERV_VM_STARTING" in ids and "HYPERV_VM_COMPLETE" in ids, ids
            vm.guest_write(4 * 1024 * 1024, os.urandom(128 * 1024))
            second = dep.wait_status(dep.run_now(job["id"]), timeout_s=300)
            assert second["status"] == "success", second
            points = sorted(dep.points(job["id"]), key=lambda p: p["id"])
            assert [p["backup_type"] for p in points] == ["Full", "Incremental"]
            assert {p["consistency_level"] for p in points} == {"Application"}
            expected = vm.capture("vdb", tmp_path / "vdb-now.raw")
            target = tmp_path / "restored"
            started = dep.post(
                "/api/v1/restores",
                {
                    "backup_point_id": points[1]["id"],
                    "target_path": str(target),
                    "disk_filter": ["vdb"],
                },
            )
            restore = dep.wait_status(started["restore_run_id"], timeout_s=300)
            assert restore["status"] == "success", restore
            assert "HYPERV_RESTORE_COMPLETE" in dep.message_ids(restore["id"])
            assert sha256(target / "vdb.img") == sha256(expected)


def test_browse_and_maintenance_commands(tmp_path: Path) -> None:
    (tmp_path / "pick-me").mkdir()
    image = tmp_path / "small.img"
    image.write_bytes(os.urandom(256 * 1024))
    with deployment(tmp_path) as dep:
        config = dep.enroll()
        agent_id = agent_id_of(config)
        job = dep.create_job(
            agent_id,
            engine="disk_image",
            disk_source_volume=str(image),
            dest_type="local",
            dest_local_path=str(tmp_path / "repo"),
            retention_json={"keep_last": 1},
        )
        with running_agent(config):
            listing = dep.post(f"/api/v1/agents/{agent_id}/browse", {"path": str(tmp_path)})
            if listing["status"] not in ("completed", "failed"):
                listing = wait_command(dep, listing["id"])
            entries = listing["result"]["entries"]
            detail = wait_for(
                lambda: (
                    dep.get(f"/api/v1/agents/{agent_id}")["volumes"]
                    and dep.get(f"/api/v1/agents/{agent_id}")
                ),
                30,
                "volumes",
            )
            assert {"path", "size", "type", "mountpoint"} <= set(detail["volumes"][0])
            assert entries[0]["type"] == "dir"
            assert "pick-me" in [e["name"] for e in entries]
            for _ in range(2):
                assert dep.wait_status(dep.run_now(job["id"]))["status"] == "success"
            snapshots = list((tmp_path / "repo" / "snapshots").iterdir())
            assert len(snapshots) == 1, "retention keep_last=1 ran after the backup"
            for kind in ("quick", "full"):
                command = dep.post(f"/api/v1/jobs/{job['id']}/maintenance", {"kind": kind})
                done = wait_command(dep, command["id"])
                assert done["status"] == "completed", done
                assert done["result"]["check_ok"] and done["result"]["mode"] == kind


def test_cancel_a_kvm_backup_leaves_the_guest_thawed_and_no_export(
    tmp_path: Path, make_vm: Any
) -> None:
    vm = make_vm("vm1")
    with deployment(tmp_path) as dep:
        config = dep.enroll()
        configure_qemu(config, vm)
        job = dep.create_job(
            agent_id_of(config),
            engine="kvm",
            vms=["vm1"],
            dest_type="local",
            dest_local_path=str(tmp_path / "repo"),
            policy_json={"bandwidth_limit_kbps": 512, "compression": "none"},
        )
        with running_agent(config):
            run_id = dep.run_now(job["id"])
            wait_for(lambda: (dep.run(run_id)["bytes_processed"] or 0) > 0, 300, "progress")
            dep.post(f"/api/v1/runs/{run_id}/cancel")
            run = dep.wait_status(run_id, timeout_s=300)
            assert run["status"] == "cancelled", run
            ids = dep.message_ids(run_id)
            assert "CANCEL_REQUESTED" in ids and "CANCELLED" in ids, ids
            assert dep.points(job["id"]) == []
        assert vm.qmp.execute("query-block-exports") == []
        assert vm.qmp.execute("query-block-jobs") == []
        assert vm.ga("guest-fsfreeze-status") == "thawed"
