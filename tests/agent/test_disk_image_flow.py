"""End to end: a real server, a real `e3backup agent run`, a real local repository. Enroll with
an admin-made token, create a disk_image job through the client API, run it, restore it."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from agent_harness import (
    REPO_PASSWORD,
    Deployment,
    agent_id_of,
    deployment,
    running_agent,
    wait_for,
)

from integration.cli_harness import sha256

MIB = 1024 * 1024


def make_image(path: Path, size: int, seed: int) -> Path:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in range(0, size, 3 * MIB):
            f.seek(offset)
            f.write(rng.randbytes(MIB))
    return path


def test_backup_then_restore_through_the_server(tmp_path: Path) -> None:
    image = make_image(tmp_path / "disk.img", 8 * MIB, seed=1)
    with deployment(tmp_path) as dep:
        config = dep.enroll()
        assert oct(config.stat().st_mode & 0o777) == "0o600"
        agent_id = agent_id_of(config)
        job = dep.create_job(
            agent_id,
            engine="disk_image",
            disk_source_volume=str(image),
            dest_type="local",
            dest_local_path=str(tmp_path / "repo"),
            policy_json={"compression": "zstd-7"},
        )
        with running_agent(config):
            run_id = dep.run_now(job["id"])
            run = dep.wait_status(run_id)
            assert run["status"] == "success", run
            assert run["progress_pct"] == 100.0
            assert run["bytes_total"] == 8 * MIB and run["bytes_processed"] == 8 * MIB
            ids = dep.message_ids(run_id)
            for expected in (
                "REPO_POLICY",
                "DISK_IMAGE_STREAM_START",
                "DISK_IMAGE_STREAM_COMPLETED",
            ):
                assert expected in ids, ids
            events = dep.events(run_id)
            policy = next(e for e in events if e["message_id"] == "REPO_POLICY")
            assert policy["params"]["compression"] == "zstd-7"
            agent_ids = [e["event_id"] for e in events if not e["event_id"].startswith("server")]
            assert max(Counter(agent_ids).values()) == 1
            assert agent_ids == sorted(agent_ids)
            points = dep.points(job["id"])
            assert (
                len(points) == 1
                and points[0]["snapshot_id"]
                == run["disk_manifests_json"]["disk.img"]["snapshot_id"]
            )
            assert dep.get(f"/api/v1/runs/{run_id}/logs"), "the run's log lines reach the server"

            target = tmp_path / "restored" / "disk.img"
            started = dep.post(
                "/api/v1/restores", {"backup_point_id": points[0]["id"], "target_path": str(target)}
            )
            restore = dep.wait_status(started["restore_run_id"])
            assert restore["status"] == "success", restore
            assert sha256(target) == sha256(image)
            command = dep.get(f"/api/v1/commands/{started['command_id']}")
            assert command["status"] == "completed"
        assert REPO_PASSWORD not in (tmp_path / "agent" / "agent.log").read_text()


def _unused(dep: Deployment) -> None:  # keeps wait_for imported for the next tests
    wait_for(lambda: True, 1, "nothing")
