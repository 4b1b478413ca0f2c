"""Repositories and Admin pages in a real browser: what agents reported, maintenance commands
queued from the page and followed until the agent answers through the agent API, the admin view
across tenants (filters, audit log), and the refusals for operators and viewers."""

from __future__ import annotations

import re

from playwright.sync_api import expect

SOURCE = "/dev/vg0/root"


def stats(snapshots: int, packs_bytes: int) -> dict:
    """repository_stats as agent/handlers/common.repository_stats reports it."""
    return {
        "size_bytes": packs_bytes,
        "snapshot_count": snapshots,
        "logical_bytes": 4 * packs_bytes,
        "dedup_ratio": 4.0,
        "sources": [
            {
                "source_id": "image:/dev/vg0/root",
                "source_name": SOURCE,
                "snapshots": snapshots,
                "newest_at": "2025-01-05T03:00:07+00:00",
                "logical_bytes": 2 * packs_bytes,
            }
        ],
    }


def check_result(mode: str, snapshots: int, **extra) -> dict:
    """A maintenance command's result as agent/handlers/maintenance.run builds it."""
    return {
        "mode": mode,
        "check_ok": True,
        "errors": [],
        "scope": "structure" if mode == "quick" else "full data 10%",
        "snapshots_checked": snapshots,
        "packs_read": 0 if mode == "quick" else 3,
        **extra,
        "repository_stats": stats(snapshots, 4096),
    }


def delivered(agent, job_id: int, command_type: str) -> int:
    """The agent polls like the real one and gets the queued command; its id."""
    answer = agent.post("poll_commands", {}).json()
    found = [c for c in answer["commands"] if c["job_id"] == job_id]
    assert [c["type"] for c in found] == [command_type], answer
    assert "repository_password" not in str(found[0]["payload"])
    return int(found[0]["command_id"])


def csrf(page) -> str:
    token: str = page.locator('meta[name="csrf-token"]').get_attribute("content")
    return token


def test_repository_page_runs_check_and_full_maintenance(page_as, web, check_page) -> None:
    agent = web.enroll_new("repo-host", web.new_tenant("repo-tenant"))
    job = web.finished_run(agent, "repo-job", "success", repository_stats=stats(2, 1024))
    page = page_as("operator")
    page.goto("/repositories")
    card = page.locator("article.repo-card", has_text="/srv/repos/repo-job")
    assert "4.00\u00d7" in card.locator(".repo-dedup").inner_text()
    assert card.locator(".repo-snapshots").inner_text() == "2"
    assert card.locator(".repo-size").inner_text() == "1.00 KiB"
    source = card.locator(".repo-sources tr", has_text=SOURCE).inner_text()
    assert re.search(r"\b2\b", source) and "2.00 KiB" in source, source
    assert card.locator(".repo-last-check").inner_text() == "never"
    assert "repo-password" not in page.content()
    check_page(page, "repositories")

    card.get_by_role("button", name="Run check").click()
    expect(card.locator(".repo-status")).to_contain_text("waiting for the agent")
    expect(card.get_by_role("button", name="Run check")).to_be_disabled()
    key = card.get_attribute("id").removeprefix("repo-")
    again = page.request.post(
        f"/repositories/{key}/maintenance",
        form={"kind": "full"},
        headers={"X-CSRF-Token": csrf(page)},
    )
    assert again.status == 409 and "wait for it to finish" in again.text()  # one open at a time
    command_id = delivered(agent, job["id"], "maintenance_quick")
    expect(card.locator(".repo-status")).to_contain_text("the agent is running it")
    done = {"command_id": command_id, "status": "completed", "result": check_result("quick", 3)}
    assert agent.post("complete_command", done).is_success
    expect(card.locator(".repo-last-check")).to_contain_text("passed", timeout=15_000)
    expect(card.locator(".repo-status")).to_contain_text("3 snapshots and 0 packs read")
    assert card.locator(".repo-snapshots").inner_text() == "3"  # the command's statistics

    card.get_by_role("button", name="Run full maintenance").click()
    dialog = page.get_by_role("dialog")
    assert "forgets snapshots" in dialog.inner_text()
    dialog.get_by_role("button", name="Run full maintenance").click()
    expect(card.locator(".repo-status")).to_contain_text("Full maintenance")
    command_id = delivered(agent, job["id"], "maintenance_full")
    failed = {"command_id": command_id, "status": "failed", "error": "pack 3f2a91c0 is missing"}
    assert agent.post("complete_command", failed).is_success
    expect(card.locator(".repo-status")).to_contain_text("pack 3f2a91c0 is missing", timeout=15_000)
    expect(card.locator(".repo-last-check")).to_contain_text("failed")
    expect(card.get_by_role("button", name="Run check")).to_be_enabled()


def test_admin_view_spans_tenants_with_filters_maintenance_and_audit(
    page_as, web, check_page
) -> None:
    first, second, empty = "adm-one", "adm-two", "adm-empty"
    ids = {name: web.new_tenant(name) for name in (first, second, empty)}
    agent_one = web.enroll_new("adm-host-one", ids[first])
    agent_two = web.enroll_new("adm-host-two", ids[second])
    local = web.finished_run(agent_one, "adm-local", "success")
    s3 = web.api(
        "POST",
        "/jobs",
        json={
            "name": "adm-s3",
            "agent_id": agent_two.agent_id,
            "engine": "files",
            "source_path": "/srv/data",
            "dest_type": "s3",
            "dest_endpoint": "https://keyid:keysecret@s3.example.test:8333",
            "dest_bucket": "backups",
            "dest_prefix": "adm",
            "access_key": "AKIA-never-shown",
            "secret_key": "secret-never-shown",
            "repository_password": "password-never-shown",
        },
    )
    assert s3.status_code == 201, s3.text

    page = page_as("admin")
    page.get_by_label("Tenant").select_option(str(ids[empty]))  # the switcher
    page.get_by_text("Switched tenant.").wait_for()
    page.goto("/repositories")
    expect(page.get_by_text("No repositories yet")).to_be_visible()
    check_page(page, "repositories-empty")
    page.goto("/admin")  # still every tenant the admin sees
    jobs = page.locator("#admin-jobs")
    row = jobs.locator("tr", has_text="adm-s3").inner_text()
    for text in (second, "files", "https://s3.example.test:8333 s3://backups/adm", "adm-host-two"):
        assert text in row, row
    html = page.content()
    secrets = ("keysecret", "AKIA-never-shown", "secret-never-shown", "repo-password")
    for secret in (*secrets, "password-never-shown"):
        assert secret not in html
    assert "adm-local" in jobs.inner_text() and "/srv/repos/adm-local" in jobs.inner_text()
    runs = page.locator("#admin-runs tr", has_text="adm-local").inner_text()
    assert "disk image" in runs and "adm-host-one" in runs and "success" in runs, runs
    check_page(page, "admin")

    page.get_by_label("Show tenant").select_option(str(ids[second]))
    page.get_by_role("button", name="Apply filters").click()
    assert "adm-s3" in jobs.inner_text() and "adm-local" not in jobs.inner_text()
    page.get_by_label("Engine").select_option("disk_image")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_text("No jobs match")).to_be_visible()

    page.goto(f"/admin?tenant_id={ids[first]}")
    page.get_by_role("button", name="Run check for adm-local").click()
    page.get_by_text(re.compile(r"Check queued for job \d+ \(command \d+\)")).wait_for()
    cell = jobs.locator("tr", has_text="adm-local").locator(".command-state")
    expect(cell).to_contain_text("waiting for the agent")
    command_id = delivered(agent_one, local["id"], "maintenance_quick")
    done = {"command_id": command_id, "status": "completed", "result": check_result("quick", 1)}
    assert agent_one.post("complete_command", done).is_success
    expect(cell).to_contain_text("passed", timeout=15_000)

    page.get_by_label("Action").select_option("job.maintenance_quick")
    page.get_by_role("button", name="Filter the log").click()
    log = page.locator("#audit-log").inner_text()
    assert web.email("admin") in log and f"job {local['id']}" in log, log
    assert "job.create" not in log
    assert re.search(
        "1\u2013" r"\d+ of \d+ audit entries", page.locator(".pager").last.inner_text()
    )


def test_admin_is_refused_below_admin_and_viewers_get_no_maintenance(page_as, web) -> None:
    agent = web.enroll_new("refused-host")
    job = web.finished_run(agent, "refused-job", "success", repository_stats=stats(1, 512))
    for role in ("operator", "viewer"):
        page = page_as(role)
        nav = page.get_by_role("navigation", name="Main")
        assert nav.get_by_role("link", name="Repositories").is_visible()
        assert nav.get_by_role("link", name="Admin").count() == 0
        assert page.request.get("/admin").status == 403
        assert page.request.get("/admin/commands/1").status == 403
        posted = page.request.post(
            f"/admin/jobs/{job['id']}/maintenance",
            form={"kind": "quick"},
            headers={"X-CSRF-Token": csrf(page)},
        )
        assert posted.status == 403, posted.status
    page.goto("/repositories")  # the viewer
    card = page.locator("article.repo-card", has_text="/srv/repos/refused-job")
    assert card.get_by_role("button").count() == 0
    key = card.get_attribute("id").removeprefix("repo-")
    refused = page.request.post(
        f"/repositories/{key}/maintenance",
        form={"kind": "quick"},
        headers={"X-CSRF-Token": csrf(page)},
    )
    assert refused.status == 403
    assert agent.post("poll_commands", {}).json()["commands"] == []  # nothing was queued
