"""test_destination, nas_mount and nas_unmount from the client API to the agent (answered over
the agent API with httpx, as an agent would): validated input, secrets sealed in the command
and seen only by the owning agent, test_destination waiting for the answer like browse."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from contract_world import (
    ACCESS_KEY,
    REPO_PASSWORD,
    SECRET_KEY,
    Agent,
    Tenant,
    assert_no_secret,
    make_tenant,
    make_user,
    server_db,
)
from sqlalchemy import select

from e3backup.server.db.engine import session_scope
from e3backup.server.db.models import Command

pytestmark = pytest.mark.parametrize("make_server", ["sqlite"], indirect=True)
S3_DEST = {
    "dest_type": "s3",
    "dest_bucket": "probe",
    "dest_prefix": "host9",
    "dest_endpoint": "http://127.0.0.1:9000",
    "access_key": ACCESS_KEY,
    "secret_key": SECRET_KEY,
    "repository_password": REPO_PASSWORD,
}
MOUNT = {"bucket": "nas-bucket", "mount_point": "/mnt/nas", "access_key": ACCESS_KEY}


def _enroll(tenant: Tenant, os_name: str) -> Agent:
    token = tenant.server.admin("enrollment-token", "create", "--tenant", tenant.name)["token"]
    body = {"enrollment_token": token, "hostname": f"{os_name}-host", "os": os_name}
    doc = httpx.post(f"{tenant.server.url}/api/agent/enroll", json=body, timeout=30).json()
    return Agent(tenant.server, doc["agent_id"], doc["agent_token"])


def _only_command(agent: Agent) -> dict[str, Any]:
    commands = agent.post("poll_commands").json()["commands"]
    assert len(commands) == 1, commands
    command: dict[str, Any] = commands[0]
    return command


def _stored(server, command_id: int) -> str:
    with server_db(server) as sessions, session_scope(sessions) as db:
        row = db.scalars(select(Command).where(Command.id == command_id)).one()
        return f"{row.payload_json} {row.secrets_enc}"


def test_test_destination_delivers_the_destination_and_waits_for_the_answer(make_server) -> None:
    server = make_server()
    acme = make_tenant(server, "acme")
    agent = acme.enroll()
    queued = acme.api(
        "POST", f"/agents/{agent.agent_id}/test_destination", json={**S3_DEST, "wait_s": 0}
    )
    assert queued.status_code == 202, queued.text
    assert_no_secret(queued.text)
    command_id = queued.json()["id"]
    assert queued.json()["type"] == "test_destination"
    assert_no_secret(_stored(server, command_id))  # sealed at rest

    command = _only_command(agent)
    job = command["job"]
    assert (job["dest_access_key"], job["dest_secret_key"]) == (ACCESS_KEY, SECRET_KEY)
    assert job["repository_password"] == REPO_PASSWORD
    assert (
        job["repository"] == "s3://probe/host9" and job["dest_endpoint"] == S3_DEST["dest_endpoint"]
    )
    agent.post("complete_command", {"command_id": command_id, "result": {"diagnosis": "ok"}})
    assert acme.api("GET", f"/commands/{command_id}").json()["result"] == {"diagnosis": "ok"}

    # The client waits while the agent picks the command up and answers (like browse).
    local = {"dest_type": "local", "dest_local_path": "/srv/repo", "wait_s": 20}
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            acme.api, "POST", f"/agents/{agent.agent_id}/test_destination", json=local
        )
        delivered: list[dict[str, Any]] = []
        while not delivered:
            delivered = agent.post("poll_commands").json()["commands"]
        assert delivered[0]["job"]["repository"] == "/srv/repo"
        answer = {"command_id": delivered[0]["command_id"], "status": "failed", "error": "denied"}
        assert agent.post("complete_command", answer).is_success
        answered = waiting.result(timeout=60)
    assert answered.status_code == 200, answered.text
    assert (answered.json()["status"], answered.json()["error"]) == ("failed", "denied")


def test_test_destination_of_a_saved_job_and_bad_input(make_server) -> None:
    server = make_server()
    acme, beta = make_tenant(server, "acme"), make_tenant(server, "beta")
    agent = acme.enroll()
    job = acme.create_job(agent)
    route = f"/agents/{agent.agent_id}/test_destination"
    queued = acme.api(
        "POST", route, json={"job_id": job["id"], "dest_prefix": "other", "wait_s": 0}
    )
    assert queued.status_code == 202, queued.text
    delivered = _only_command(agent)["job"]
    assert delivered["repository_password"] == REPO_PASSWORD, "the job's saved secrets"
    assert delivered["repository"] == "s3://backups/other", "a sent field overrides the job's"

    beta_job = beta.create_job(beta.enroll())
    viewer = make_user(server, "acme", acme.tenant_id, "viewer")
    cases = [
        (acme, {"wait_s": 0}, 422, "dest_type is required"),
        (acme, {"dest_type": "s3", "wait_s": 0}, 422, "needs dest_bucket"),
        (acme, {"dest_type": "local", "wait_s": 0}, 422, "needs dest_local_path"),
        (acme, {"dest_type": "ftp"}, 422, "dest_type"),
        (acme, {"dest_type": "local", "dest_local_path": "/r", "speed": 1}, 422, "unknown field"),
        (acme, {"job_id": beta_job["id"], "wait_s": 0}, 404, "not found"),
        (beta, {"dest_type": "local", "dest_local_path": "/r"}, 404, "not found"),
        (viewer, {"dest_type": "local", "dest_local_path": "/r"}, 403, "operator"),
    ]
    for who, body, status, message in cases:
        answer = who.api("POST", route, json=body)
        assert (answer.status_code, message in answer.json()["detail"]) == (status, True), body
    assert agent.post("poll_commands").json()["commands"] == [], "nothing queued by bad input"


def test_nas_mount_and_unmount(make_server) -> None:
    server = make_server()
    acme = make_tenant(server, "acme")
    linux, windows = _enroll(acme, "linux"), _enroll(acme, "windows")
    mounted = acme.api(
        "POST",
        f"/agents/{linux.agent_id}/nas_mount",
        json={**MOUNT, "secret_key": SECRET_KEY, "read_only": True},
    )
    assert mounted.status_code == 202, mounted.text
    assert_no_secret(mounted.text)
    mount_id = mounted.json()["id"]
    assert_no_secret(_stored(server, mount_id))
    command = _only_command(linux)
    payload = command["payload"]
    assert command["type"] == "nas_mount" and payload["mount_id"] == mount_id
    assert (payload["bucket"], payload["mount_point"], payload["read_only"]) == (
        "nas-bucket",
        "/mnt/nas",
        True,
    )
    assert (payload["access_key"], payload["secret_key"]) == (ACCESS_KEY, SECRET_KEY)
    assert linux.post("complete_command", {"command_id": mount_id}).is_success

    letter = {**MOUNT, "secret_key": SECRET_KEY, "mount_point": None, "drive_letter": "y"}
    on_windows = acme.api("POST", f"/agents/{windows.agent_id}/nas_mount", json=letter)
    assert on_windows.status_code == 202, on_windows.text
    assert _only_command(windows)["payload"]["drive_letter"] == "Y"

    unmounted = acme.api(
        "POST", f"/agents/{linux.agent_id}/nas_unmount", json={"mount_id": mount_id}
    )
    assert unmounted.status_code == 202, unmounted.text
    command = _only_command(linux)
    assert command["type"] == "nas_unmount"
    assert command["payload"] == {
        "mount_id": mount_id,
        "drive_letter": None,
        "mount_point": "/mnt/nas",
        "bucket": "nas-bucket",
    }

    failed = acme.api(
        "POST", f"/agents/{linux.agent_id}/nas_mount", json={**MOUNT, "secret_key": SECRET_KEY}
    )
    failed_id = failed.json()["id"]
    linux.post("poll_commands")
    linux.post(
        "complete_command", {"command_id": failed_id, "status": "failed", "error": "no fuse"}
    )
    operator = make_user(server, "acme", acme.tenant_id, "operator")
    good = {**MOUNT, "secret_key": SECRET_KEY}
    mount_cases = [
        ({**good, "drive_letter": "Y"}, 422, "either drive_letter"),
        ({**good, "mount_point": None}, 422, "either drive_letter"),
        ({**good, "mount_point": None, "drive_letter": "Y"}, 422, "only on Windows"),
        ({**good, "mount_point": "/mnt/../etc"}, 422, "without '..'"),
        ({**good, "mount_point": "relative"}, 422, "mount_point"),
        ({**good, "bucket": "Not_A_Bucket"}, 422, "bucket"),
        ({**good, "cache_mode": "huge"}, 422, "cache_mode"),
        ({"bucket": "nas-bucket", "mount_point": "/mnt/nas"}, 422, "access_key"),
    ]
    for body, status, message in mount_cases:
        answer = acme.api("POST", f"/agents/{linux.agent_id}/nas_mount", json=body)
        assert (answer.status_code, message in answer.json()["detail"]) == (status, True), body
    assert operator.api("POST", f"/agents/{linux.agent_id}/nas_mount", json=good).status_code == 403
    unmount_cases = [
        ({"mount_id": 999_999}, 404),
        ({"mount_id": on_windows.json()["id"]}, 404),  # another agent's mount
        ({"mount_id": failed_id}, 409),
        ({}, 422),
    ]
    for body, status in unmount_cases:
        answer = acme.api("POST", f"/agents/{linux.agent_id}/nas_unmount", json=body)
        assert answer.status_code == status, (body, answer.text)
    assert linux.post("poll_commands").json()["commands"] == []
