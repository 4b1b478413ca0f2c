"""S3 destinations on a real SeaweedFS: the bucket created on first use (bucket_auto_create),
backup and restore through the server; the endpoint named without a scheme means https, which
this plain-HTTP server cannot speak: the preflight says so (STORAGE_TLS_FAILED)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from agent_harness import agent_id_of, deployment, running_agent

from integration.cli_harness import sha256


def test_s3_backup_and_restore_with_bucket_auto_create(tmp_path: Path, seaweed_server: Any) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(3 * 1024 * 1024) + bytes(5 * 1024 * 1024))
    host_port = seaweed_server.endpoint.split("://", 1)[1]
    with deployment(tmp_path) as dep:
        config = dep.enroll()
        s3 = {
            "engine": "disk_image",
            "disk_source_volume": str(image),
            "dest_type": "s3",
            "dest_bucket": f"agent-{os.getpid()}",
            "dest_prefix": "host1",
            "access_key": seaweed_server.access_key,
            "secret_key": seaweed_server.secret_key,
            "bucket_auto_create": True,
        }
        good = dep.create_job(agent_id_of(config), dest_endpoint=seaweed_server.endpoint, **s3)
        no_scheme = dep.create_job(agent_id_of(config), dest_endpoint=host_port, **s3)
        with running_agent(config) as agent:
            run = dep.wait_status(dep.run_now(good["id"]))
            assert run["status"] == "success", run
            assert "REPO_INITIALIZED" in dep.message_ids(run["id"])
            point = dep.points(good["id"])[0]
            target = tmp_path / "restored.img"
            started = dep.post(
                "/api/v1/restores", {"backup_point_id": point["id"], "target_path": str(target)}
            )
            assert dep.wait_status(started["restore_run_id"])["status"] == "success"
            assert sha256(target) == sha256(image)

            failed = dep.wait_status(dep.run_now(no_scheme["id"]))
            assert failed["status"] == "failed"
            assert "STORAGE_TLS_FAILED" in dep.message_ids(failed["id"]), failed
        assert seaweed_server.secret_key not in agent.log()
