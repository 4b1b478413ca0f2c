"""Faults around a running backup, with a real server and a real agent process: cancel, SIGKILL
of the engine process, the server going away mid-run, a killed agent that is handed its run
back, and runs that must fail with one clear reason (storage unreachable, wrong repository
password, an engine this host lacks)."""

from __future__ import annotations

import os
import re
import signal
import socket
from collections import Counter
from pathlib import Path
from typing import Any

from agent_harness import (
    FAST_SERVER,
    Deployment,
    agent_id_of,
    deployment,
    e3backup,
    running_agent,
    wait_for,
)

from fixtures.server_process import running_server

SLOW_UPLOAD = {"bandwidth_limit_kbps": 4096}


def image_job(dep: Deployment, config: Path, image: Path, repo: Path, **policy: Any) -> int:
    job = dep.create_job(
        agent_id_of(config),
        engine="disk_image",
        disk_source_volume=str(image),
        dest_type="local",
        dest_local_path=str(repo),
        policy_json=policy,
    )
    return int(job["id"])


def wait_running_with_progress(dep: Deployment, run_id: int) -> None:
    def moving() -> bool:
        run = dep.run(run_id)
        assert run["status"] not in ("success", "failed", "cancelled"), run
        return run["status"] == "running" and (run["bytes_processed"] or 0) > 0

    wait_for(moving, 120, f"run {run_id} to make progress")


def agent_event_ids(dep: Deployment, run_id: int) -> list[str]:
    return [e["event_id"] for e in dep.events(run_id) if e["event_id"][0].isdigit()]


def test_cancel_a_running_backup(tmp_path: Path, random_image: Path) -> None:
    with deployment(tmp_path) as dep:
        config = dep.enroll()
        job_id = image_job(dep, config, random_image, tmp_path / "repo", **SLOW_UPLOAD)
        with running_agent(config):
            run_id = dep.run_now(job_id)
            wait_running_with_progress(dep, run_id)
            dep.post(f"/api/v1/runs/{run_id}/cancel")
            run = dep.wait_status(run_id)
            assert run["status"] == "cancelled", run
            ids = dep.message_ids(run_id)
            # recorded once (by the server, when asked), not again by the agent
            assert ids.count("CANCEL_REQUESTED") == 1 and ids[-1] == "CANCELLED", ids
            cancelled = [e for e in dep.events(run_id) if e["message_id"] == "CANCELLED"]
            assert cancelled[-1]["level"] == "info"
            assert dep.points(job_id) == []
        assert not list((tmp_path / "repo" / "snapshots").glob("*"))


def test_sigkill_of_the_engine_fails_the_run_and_the_agent_goes_on(
    tmp_path: Path, random_image: Path
) -> None:
    with deployment(tmp_path) as dep:
        config = dep.enroll()
        job_id = image_job(dep, config, random_image, tmp_path / "repo", **SLOW_UPLOAD)
        with running_agent(config) as agent:
            run_id = dep.run_now(job_id)
            wait_running_with_progress(dep, run_id)
            found = re.search(rf"run {run_id}: engine process (\d+) started", agent.log())
            assert found, agent.log()
            os.kill(int(found.group(1)), signal.SIGKILL)
            run = dep.wait_status(run_id)
            assert run["status"] == "failed"
            assert "killed by SIGKILL" in run["error"], run
            assert agent.proc is not None and agent.proc.poll() is None
            second = dep.run_now(job_id)
            assert dep.wait_status(second, timeout_s=180)["status"] == "success"
            assert len(dep.points(job_id)) == 1


def test_server_down_mid_run_the_run_completes_and_every_event_arrives_once(
    tmp_path: Path, random_image: Path
) -> None:
    with deployment(tmp_path) as dep:
        config = dep.enroll()
        job_id = image_job(dep, config, random_image, tmp_path / "repo", **SLOW_UPLOAD)
        with running_agent(config) as agent:
            run_id = dep.run_now(job_id)
            wait_running_with_progress(dep, run_id)
            os.kill(dep.server.pid, signal.SIGTERM)
            outbox = config.parent / "state" / "outbox.json"
            wait_for(
                lambda: outbox.exists() and '"update"' in outbox.read_text(),
                180,
                "the finished run's report to wait in the outbox",
            )
            wait_for(lambda: "next try in" in agent.log(), 60, "the agent to back off")
            port = int(dep.server.url.rsplit(":", 1)[1])
            db_url = f"sqlite:///{dep.data_dir / 'e3backup-server.db'}"
            with running_server(
                dep.data_dir, db_url, FAST_SERVER, port=port, log_name="server-2.log"
            ):
                run = dep.wait_status(run_id, timeout_s=120)
                assert run["status"] == "success", run
                ids = agent_event_ids(dep, run_id)
                assert max(Counter(ids).values()) == 1 and ids == sorted(ids)
                assert "DISK_IMAGE_STREAM_COMPLETED" in dep.message_ids(run_id)
                assert len(dep.points(job_id)) == 1
                wait_for(lambda: outbox.read_text() == "[]", 60, "the outbox to empty")


def run_and_kill_the_agent(dep: Any, config: Path, job_id: int) -> int:
    """Run the job now and SIGKILL `agent run` once the run shows progress; the run's id."""
    with running_agent(config) as agent:
        run_id = dep.run_now(job_id)
        wait_running_with_progress(dep, run_id)
        assert agent.proc is not None
        agent.proc.kill()
        agent.proc.wait()
    return run_id


def test_a_killed_agent_gets_its_run_back_as_a_fresh_attempt(
    tmp_path: Path, random_image: Path
) -> None:
    with deployment(tmp_path, {"agent_reclaim_grace_s": "2"}) as dep:
        config = dep.enroll()
        job_id = image_job(dep, config, random_image, tmp_path / "repo", **SLOW_UPLOAD)
        run_id = run_and_kill_the_agent(dep, config, job_id)
        with running_agent(config):
            run = dep.wait_status(run_id, timeout_s=180)
            assert run["status"] == "success", run
            ids = agent_event_ids(dep, run_id)
            assert any(i.startswith(f"{run_id}-2-") for i in ids), ids
            assert len(dep.points(job_id)) == 1


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_s3_endpoint_fails_fast_with_the_diagnosis(tmp_path: Path) -> None:
    image = tmp_path / "small.img"
    image.write_bytes(b"x" * 65536)
    with deployment(tmp_path) as dep:
        config = dep.enroll()
        job = dep.create_job(
            agent_id_of(config),
            engine="disk_image",
            disk_source_volume=str(image),
            dest_type="s3",
            dest_bucket="backups",
            dest_endpoint=f"127.0.0.1:{closed_port()}",  # no scheme: seed 002's endpoint form
            access_key="AKIAEXAMPLE",
            secret_key="secret-key-value",
        )
        with running_agent(config) as agent:
            run = dep.wait_status(dep.run_now(job["id"]))
            assert run["status"] == "failed"
            assert "STORAGE_TCP_REFUSED" in run["error"], run
            assert "STORAGE_TCP_REFUSED" in dep.message_ids(run["id"])
        assert "secret-key-value" not in agent.log()


def test_wrong_repository_password_fails_with_a_clear_error(tmp_path: Path) -> None:
    image = tmp_path / "small.img"
    image.write_bytes(b"y" * 65536)
    repo = tmp_path / "repo"
    e3backup("--repo", repo, "repo", "init", env={"E3BACKUP_PASSWORD": "the-real-one"})
    with deployment(tmp_path) as dep:
        config = dep.enroll()
        job_id = image_job(dep, config, image, repo)
        with running_agent(config):
            run = dep.wait_status(dep.run_now(job_id))
            assert run["status"] == "failed"
            assert "wrong password" in run["error"], run
            assert "BACKUP_FAILED" in dep.message_ids(run["id"])


def test_hyperv_job_fails_not_supported_on_this_host(tmp_path: Path) -> None:
    with deployment(tmp_path) as dep:
        config = dep.enroll()
        job = dep.create_job(
            agent_id_of(config),
            engine="hyperv",
            vms=["web01"],
            dest_type="local",
            dest_local_path=str(tmp_path / "repo"),
        )
        with running_agent(config):
            run = dep.wait_status(dep.run_now(job["id"]))
            assert run["status"] == "failed"
            assert "Hyper-V is not supported on this host" in run["error"]


def test_sigterm_stops_the_agent_cleanly_and_reports_the_run(
    tmp_path: Path, random_image: Path
) -> None:
    with deployment(tmp_path) as dep:
        config = dep.enroll()
        job_id = image_job(dep, config, random_image, tmp_path / "repo", **SLOW_UPLOAD)
        with running_agent(config) as agent:
            run_id = dep.run_now(job_id)
            wait_running_with_progress(dep, run_id)
            assert agent.stop() == 0
        run = dep.run(run_id)
        assert run["status"] == "cancelled", run
        requested = [e for e in dep.events(run_id) if e["message_id"] == "CANCEL_REQUESTED"]
        assert "SIGTERM" in requested[0]["params"]["reason"]
        assert dep.points(job_id) == []


WATCHDOG = {"agent_watchdog_timeout_s": "6", "agent_reclaim_grace_s": "1", "watchdog_tick_s": "0.5"}


def test_watchdog_fails_the_run_of_a_killed_agent_and_the_restarted_agent_takes_the_next(
    tmp_path: Path, random_image: Path
) -> None:
    """SIGKILL of `agent run` mid-run; it stays down past the watchdog timeout, so the server
    fails the run AGENT_OFFLINE (not reclaimed: too late); restarted, it runs the next one."""
    with deployment(tmp_path, WATCHDOG) as dep:
        config = dep.enroll()
        job_id = image_job(dep, config, random_image, tmp_path / "repo", **SLOW_UPLOAD)
        run_id = run_and_kill_the_agent(dep, config, job_id)
        run = dep.wait_status(run_id, timeout_s=60)
        assert (run["status"], run["error_code"]) == ("failed", "AGENT_OFFLINE"), run
        assert "AGENT_OFFLINE" in dep.message_ids(run_id)
        fast = dep.api.patch(f"/api/v1/jobs/{job_id}", json={"policy_json": {}})
        assert fast.status_code == 200, fast.text
        with running_agent(config):
            next_id = dep.run_now(job_id)
            assert dep.wait_status(next_id, timeout_s=180)["status"] == "success"
        assert dep.run(run_id)["status"] == "failed", "the failed run is never run again"
        assert f"{run_id}-2-" not in str(agent_event_ids(dep, run_id)), "nor resumed"
        assert len(dep.points(job_id)) == 1
