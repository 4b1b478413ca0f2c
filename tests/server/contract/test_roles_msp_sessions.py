"""Who may do what: an MSP parent's users see and manage their child tenants' agents, jobs and
runs while a child never sees its parent or a sibling; viewer/operator/admin roles; the UI's
session cookie (HttpOnly, SameSite) with its CSRF token, and logout ending the session."""

from __future__ import annotations

import httpx
import pytest
from contract_world import PASSWORD, Tenant, backed_up_point, make_tenant, make_user

pytestmark = pytest.mark.parametrize("make_server", ["sqlite"], indirect=True)
JOB_PATCH = {"name": "renamed"}


def _ids(tenant: Tenant, route: str) -> set[int]:
    answer = tenant.api("GET", route)
    assert answer.status_code == 200, answer.text
    return {item["id"] for item in answer.json()["items"]}


def test_msp_parent_sees_and_manages_children_never_the_reverse(make_server) -> None:
    server = make_server()
    msp = make_tenant(server, "msp")
    child, sibling = (
        make_tenant(server, "child", parent="msp"),
        make_tenant(server, "sib", parent="msp"),
    )
    msp_agent, child_agent, sibling_agent = msp.enroll("m"), child.enroll("c"), sibling.enroll("s")
    child_job = child.create_job(child_agent)

    assert _ids(msp, "/agents") == {
        msp_agent.agent_id,
        child_agent.agent_id,
        sibling_agent.agent_id,
    }
    assert child_job["id"] in _ids(msp, "/jobs")
    run = msp.run_now(child_job["id"])  # the MSP runs its customer's job
    assert run["tenant_id"] == child.tenant_id and run["id"] in _ids(msp, "/runs")
    assert msp.api("POST", f"/runs/{run['id']}/cancel").json()["status"] == "cancelled"
    made = msp.create_job(sibling_agent, name="by-msp")
    assert made["tenant_id"] == sibling.tenant_id, "a job lives in its agent's tenant"
    assert msp.api("PATCH", f"/jobs/{child_job['id']}", json=JOB_PATCH).status_code == 200
    assert (
        msp.api("POST", f"/agents/{sibling_agent.agent_id}/disable").json()["status"] == "disabled"
    )

    assert _ids(child, "/agents") == {child_agent.agent_id}
    assert _ids(child, "/jobs") == {child_job["id"]}
    for other in (msp_agent, sibling_agent):
        assert child.api("GET", f"/agents/{other.agent_id}").status_code == 404
        assert child.api("POST", f"/agents/{other.agent_id}/disable").status_code == 404
    assert child.api("GET", f"/jobs/{made['id']}").status_code == 404
    assert child.api("GET", "/me").json()["tenant_ids"] == [child.tenant_id]
    bad_job = {
        "name": "x",
        "agent_id": msp_agent.agent_id,
        "engine": "files",
        "source_path": "/e",
        "dest_type": "local",
        "dest_local_path": "/r",
        "repository_password": "pw",
    }
    answer = child.api("POST", "/jobs", json=bad_job)
    assert answer.status_code == 422 and answer.json()["field"] == "agent_id", answer.text


def _attempts(tenant: Tenant, ids: dict[str, int]) -> dict[str, httpx.Response]:
    """Each guarded action once, in an order where an allowed one does not break the next."""
    job_body = {
        "name": "x",
        "agent_id": ids["agent"],
        "engine": "files",
        "source_path": "/e",
        "dest_type": "local",
        "dest_local_path": "/r",
        "repository_password": "pw",
    }
    restore = {"backup_point_id": ids["point"], "target_path": "/restore"}
    out = {"run_now": tenant.api("POST", f"/jobs/{ids['job']}/runs")}
    if out["run_now"].status_code == 201:
        ids["run"] = out["run_now"].json()["id"]
    out["cancel"] = tenant.api("POST", f"/runs/{ids['run']}/cancel")
    out["restore"] = tenant.api("POST", "/restores", json=restore)
    out["job_create"] = tenant.api("POST", "/jobs", json=job_body)
    out["job_edit"] = tenant.api("PATCH", f"/jobs/{ids['job']}", json=JOB_PATCH)
    out["enrollment_token"] = tenant.api("POST", "/enrollment_tokens", json={})
    out["agent_disable"] = tenant.api("POST", f"/agents/{ids['spare_agent']}/disable")
    out["agent_delete"] = tenant.api("DELETE", f"/agents/{ids['spare_agent']}")
    out["job_delete"] = tenant.api("DELETE", f"/jobs/{ids['job']}")
    return out


def test_roles_viewer_operator_admin(make_server) -> None:
    server = make_server()
    admin = make_tenant(server, "acme")
    viewer = make_user(server, "acme", admin.tenant_id, "viewer")
    operator = make_user(server, "acme", admin.tenant_id, "operator")
    agent = admin.enroll()
    point = backed_up_point(admin, agent)
    guarded = ("run_now", "cancel", "restore", "job_create", "job_edit", "enrollment_token")
    guarded += ("agent_disable", "agent_delete", "job_delete")
    operator_may = {"run_now": 201, "cancel": 200, "restore": 201}
    admin_may = {**operator_may, "job_create": 201, "enrollment_token": 201}
    admin_may.update(job_edit=200, agent_disable=200, agent_delete=200, job_delete=200)
    expected = [
        (viewer, dict.fromkeys(guarded, 403)),
        (operator, {**dict.fromkeys(guarded, 403), **operator_may}),
        (admin, admin_may),
    ]
    job_id = admin.api("GET", "/jobs").json()["items"][0]["id"]
    for who, wanted in expected:
        spare = admin.enroll(f"spare-{who.email}").agent_id
        ids = {"agent": agent.agent_id, "job": job_id, "point": point, "spare_agent": spare}
        ids["run"] = admin.run_now(job_id)["id"] if who is viewer else 0  # else run_now's
        got = {name: answer.status_code for name, answer in _attempts(who, ids).items()}
        assert got == wanted, who.email
        if who is viewer:
            assert admin.api("POST", f"/runs/{ids['run']}/cancel").status_code == 200
        for route in ("/agents", "/jobs", "/runs", "/backup_points"):
            assert who.api("GET", route).status_code == 200, (who.email, route)


def test_session_cookie_csrf_and_logout(make_server) -> None:
    server = make_server()
    acme = make_tenant(server, "acme")
    job = acme.create_job(acme.enroll())
    login = httpx.post(
        f"{server.url}/api/v1/auth/login", json={"email": acme.email, "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    cookie_header = login.headers["set-cookie"].lower()
    assert (
        "httponly" in cookie_header
        and "samesite=strict" in cookie_header
        and "path=/" in cookie_header
    )
    assert "secure" not in cookie_header.split(";")[1:], "plain http: no Secure flag"
    session, csrf = login.cookies["e3_session"], login.json()["csrf_token"]
    assert session not in login.text, "the session token travels only in the cookie"

    def call(method: str, route: str, token: str | None = None) -> httpx.Response:
        headers = {"X-CSRF-Token": token} if token is not None else {}
        return httpx.request(
            method,
            f"{server.url}/api/v1{route}",
            cookies={"e3_session": session},
            headers=headers,
            timeout=30,
        )

    assert call("GET", "/me").json()["email"] == acme.email
    assert call("POST", f"/jobs/{job['id']}/runs").status_code == 403
    assert call("POST", f"/jobs/{job['id']}/runs", "wrong-token").status_code == 403
    assert acme.api("GET", "/runs").json()["total"] == 0, "refused calls changed nothing"
    assert call("POST", f"/jobs/{job['id']}/runs", csrf).status_code == 201
    assert call("POST", "/auth/logout").status_code == 403, "logout is CSRF-protected too"
    assert call("POST", "/auth/logout", csrf).status_code == 200
    assert call("GET", "/me").status_code == 401
    assert call("POST", f"/jobs/{job['id']}/runs", csrf).status_code == 401
    wrong = httpx.post(
        f"{server.url}/api/v1/auth/login", json={"email": acme.email, "password": "nope"}
    )
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
