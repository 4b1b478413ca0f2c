"""Commands beside runs (browse, repository maintenance) and cancelling a kvm backup of the
tiny QEMU guest, through a real server and a real agent process. The kvm Full/Incremental/
restore path end to end is in test_kvm_e2e.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from agent_harness import agent_id_of, configure_qemu, deployment, running_agent, wait_for


def test_browse_and_maintenance_commands(tmp_path: Path) -> None:
    (tmp_path / "pick-me").mkdir()
    image, other = tmp_path / "small.img", tmp_path / "other.img"
    image.write_bytes(os.urandom(256 * 1024))
    other.write_bytes(os.urandom(128 * 1024))
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
        # Another job into the same repository, keeping more: job 1's retention and its
        # maintenance must never forget job 2's snapshots.
        neighbour = dep.create_job(
            agent_id,
            engine="disk_image",
            disk_source_volume=str(other),
            dest_type="local",
            dest_local_path=str(tmp_path / "repo"),
            retention_json={"keep_last": 5},
        )
        with running_agent(config):
            listing = dep.post(f"/api/v1/agents/{agent_id}/browse", {"path": str(tmp_path)})
            if listing["status"] not in ("completed", "failed"):
                listing = dep.wait_command(listing["id"])
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
                assert dep.wait_status(dep.run_now(neighbour["id"]))["status"] == "success"
                assert dep.wait_status(dep.run_now(job["id"]))["status"] == "success"
            snapshots = list((tmp_path / "repo" / "snapshots").iterdir())
            assert len(snapshots) == 3, "keep_last=1 for job 1 after its backup; job 2 kept 2"
            for kind in ("quick", "full"):
                command = dep.post(f"/api/v1/jobs/{job['id']}/maintenance", {"kind": kind})
                done = dep.wait_command(command["id"])
                assert done["status"] == "completed", done
                assert done["result"]["check_ok"] and done["result"]["mode"] == kind
                sources = done["result"]["repository_stats"]["sources"]  # the Repositories page
                counts = {s["source_name"]: s["snapshots"] for s in sources}
                assert counts == {str(image): 1, str(other): 2}, sources


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
