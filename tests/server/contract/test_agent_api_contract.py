"""The agent API driven exactly as an agent drives it, against a live server process, on
SQLite and on PostgreSQL: enroll, claim (exactly once among 20 concurrent callers), progress,
idempotent events, cancellation through the client API, reclaim after a restart."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from contract_world import ACCESS_KEY, REPO_PASSWORD, SECRET_KEY, assert_no_secret, make_tenant

CALLERS = 20
GRACE_S = 5


def test_claim_progress_events_cancel(make_server) -> None:
    server = make_server()
    acme = make_tenant(server, "acme")
    agent = acme.enroll()
    job = acme.create_job(agent)
    run = acme.run_now(job["id"])
    assert run["status"] == "queued"

    with ThreadPoolExecutor(CALLERS) as pool:
        answers = list(pool.map(lambda _: agent.post("next_run"), range(CALLERS)))
    claimed = [a for a in answers if a.status_code == 200]
    assert sorted({a.status_code for a in answers}) == [200, 204]
    assert len(claimed) == 1, "the run must be handed out exactly once"
    payload = claimed[0].json()
    assert payload["run_id"] == run["id"] and payload["status"] == "starting"
    assert payload["engine"] == "disk_image" and payload["disk_source_volume"] == "/dev/vg0/root"
    assert payload["repository"] == "s3://backups/host1"
    assert payload["repository_password"] == REPO_PASSWORD  # decrypted for the owning agent only
    assert (payload["dest_access_key"], payload["dest_secret_key"]) == (ACCESS_KEY, SECRET_KEY)
    assert agent.post("next_run").status_code == 204

    update = {"run_id": run["id"], "status": "running", "progress_pct": 10.0}
    assert agent.post(
        "update_run", {**update, "bytes_transferred": 0, "bytes_total": 500}
    ).is_success
    assert agent.post("update_run", {"run_id": run["id"], "progress_pct": 20.5}).is_success
    detail = acme.api("GET", f"/runs/{run['id']}").json()
    assert detail["status"] == "running"
    assert detail["bytes_transferred"] == 0, "a 0 is kept, a missing field left alone"
    assert (detail["bytes_total"], detail["progress_pct"]) == (500, 20.5)

    events = {
        "run_id": run["id"],
        "events": [
            {"event_id": "e1", "message_id": "DISK_IMAGE_STREAM_START", "params": {"disk": "a"}},
            {"event_id": "e2", "message_id": "HYPERV_VM_STARTING", "params": {"vm_name": "x"}},
        ],
    }
    assert agent.post("push_events", events).json() == {"accepted": 2, "duplicates": 0}
    assert agent.post("push_events", events).json() == {"accepted": 0, "duplicates": 2}
    listed = acme.api("GET", f"/runs/{run['id']}/events").json()
    assert [e["event_id"] for e in listed] == ["e1", "e2"]
    after = acme.api("GET", f"/runs/{run['id']}/events", params={"after_event_id": listed[0]["id"]})
    assert [e["event_id"] for e in after.json()] == ["e2"]

    assert agent.post("poll_commands", {"run_id": run["id"]}).json()["cancel_requested"] is False
    cancelled = acme.api("POST", f"/runs/{run['id']}/cancel").json()
    assert cancelled["status"] == "running" and cancelled["cancel_requested"] is True
    polled = agent.post("poll_commands", {"run_id": run["id"]}).json()
    assert polled["cancel_requested"] is True
    assert {"type": "cancel", "run_id": run["id"]}.items() <= polled["commands"][0].items()
    ended = agent.post("update_run", {"run_id": run["id"], "status": "cancelled"})
    assert ended.json()["status"] == "cancelled"
    assert agent.post("update_run", {"run_id": run["id"], "status": "cancelled"}).is_success
    assert agent.post("update_run", {"run_id": run["id"], "status": "running"}).status_code == 409
    assert acme.api("GET", f"/runs/{run['id']}").json()["status"] == "cancelled"

    for route in ("/jobs", f"/jobs/{job['id']}", f"/runs/{run['id']}", "/runs"):
        assert_no_secret(acme.api("GET", route).text)
    assert_no_secret(acme.api("GET", f"/runs/{run['id']}/events").text)


def test_queued_run_cancels_at_once(make_server) -> None:
    server = make_server()
    acme = make_tenant(server, "acme")
    agent = acme.enroll()
    run = acme.run_now(acme.create_job(agent)["id"])
    assert acme.api("POST", f"/runs/{run['id']}/cancel").json()["status"] == "cancelled"
    assert agent.post("next_run").status_code == 204
    assert acme.api("POST", f"/runs/{run['id']}/cancel").status_code == 409


def test_restarted_agent_reclaims_its_silent_run(make_server) -> None:
    # The grace must outlast the burst of 20 callers below (a reclaimed run silent past the
    # grace again is rightly reclaimable again); 5 s holds on a loaded 2-core machine.
    server = make_server(agent_reclaim_grace_s=str(GRACE_S), agent_watchdog_timeout_s="600")
    acme = make_tenant(server, "acme")
    agent, other = acme.enroll("host1"), acme.enroll("host2")
    run = acme.run_now(acme.create_job(agent)["id"])
    assert agent.post("next_run").json()["reclaimed"] is False
    assert agent.post("update_run", {"run_id": run["id"], "status": "running"}).is_success
    assert agent.post("next_run").status_code == 204, "a live run is not handed out again"
    time.sleep(GRACE_S + 0.5)  # the agent "restarted" and stayed silent past the grace period
    assert other.post("next_run").status_code == 204, "only its own agent may reclaim a run"
    with ThreadPoolExecutor(CALLERS) as pool:
        answers = list(pool.map(lambda _: agent.post("next_run"), range(CALLERS)))
    reclaimed = [a.json() for a in answers if a.status_code == 200]
    assert len(reclaimed) == 1 and reclaimed[0]["run_id"] == run["id"]
    assert reclaimed[0]["reclaimed"] is True and reclaimed[0]["status"] == "running"


def test_wrong_or_revoked_agent_token(make_server) -> None:
    server = make_server(auth_failure_limit="5")
    acme = make_tenant(server, "acme")
    agent = acme.enroll()
    assert agent.post("poll_commands").status_code == 200
    assert acme.api("POST", f"/agents/{agent.agent_id}/disable").json()["status"] == "disabled"
    assert agent.post("poll_commands").status_code == 401, "a disabled agent's token is revoked"
    codes = [agent.post("next_run").status_code for _ in range(7)]
    assert codes[0] == 401 and codes[-1] == 429
