"""Dashboard and Agents pages in a real browser: what they show, the enrollment token that
really enrolls `e3backup agent enroll`, disable/delete behind the confirmation dialog."""

from __future__ import annotations

import json
import re
import subprocess

from fixtures.server_process import e3backup_binary

STATS = {"size_bytes": 1000, "logical_bytes": 4000, "snapshot_count": 2, "dedup_ratio": 4.0}


def test_dashboard_of_a_switched_tenant(page_as, web, check_page) -> None:
    tenant_id = web.new_tenant("dash-tenant")
    agent = web.enroll_new("dash-host", tenant_id)
    web.finished_run(agent, "dash-ok", "success", repository_stats=STATS)
    web.finished_run(agent, "dash-broken", "failed", error="disk vanished")

    page = page_as("admin")
    assert page.get_by_role("heading", name="Dashboard").is_visible()
    page.get_by_label("Tenant").select_option(str(tenant_id))  # submits on change
    page.wait_for_load_state()
    page.get_by_text("Switched tenant.").wait_for()
    assert page.locator("#runs-24h").inner_text() == "2"
    assert page.locator("#agents-online").inner_text() == "1"
    counts = page.locator("#run-counts").inner_text()
    assert re.search(r"success\s+1", counts) and re.search(r"failed\s+1", counts), counts
    attention = page.locator("#attention").inner_text()
    assert "dash-broken failed" in attention and "disk vanished" in attention
    assert "dash-ok" not in attention
    row = page.locator("#repositories tr", has_text="/srv/repos/dash-ok").inner_text()
    assert "2.93 KiB" in row and "(4.00\u00d7)" in row and "1000 B" in row, row  # browser-formatted
    assert "/srv/repos/dash-broken" in page.locator("#repositories").inner_text()
    check_page(page, "dashboard")


def test_enrollment_token_enrolls_a_real_agent(page_as, web, check_page, tmp_path) -> None:
    page = page_as("admin")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto("/agents")
    page.get_by_label("Description").fill("from the browser test")
    page.get_by_role("button", name="Create enrollment token").click()
    command = page.locator("#enroll-command").inner_text()
    match = re.fullmatch(rf"e3backup agent enroll --server {web.url} --token (e3e_\S+)", command)
    assert match, command
    page.get_by_role("button", name="Copy command").click()
    page.get_by_text("Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == command

    config = tmp_path / "agent.toml"
    proc = subprocess.run(
        [e3backup_binary(), "agent", "enroll", "--server", web.url, "--token", match[1],
         "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    agent_id = json.loads(proc.stdout)["agent_id"]

    page.goto("/agents")
    row = page.locator(f'tr[data-agent-id="{agent_id}"]')
    assert "online" in row.inner_text()
    check_page(page, "agents")


def test_disable_and_delete_go_through_the_confirmation_dialog(page_as, web) -> None:
    agent = web.enroll_new("doomed-host")
    page = page_as("admin")
    page.goto("/agents")
    row = page.locator(f'tr[data-agent-id="{agent.agent_id}"]')
    dialog = page.get_by_role("dialog")

    row.get_by_role("button", name="Delete").click()
    assert "Delete agent doomed-host?" in dialog.inner_text()
    page.keyboard.press("Escape")  # closes without deleting; focus returns to the button
    assert not dialog.is_visible()
    assert page.evaluate("document.activeElement.textContent.trim()") == "Delete"
    row.get_by_role("button", name="Disable").click()
    dialog.get_by_role("button", name="Cancel").click()
    assert web.api("GET", f"/agents/{agent.agent_id}").json()["status"] == "enabled"

    row.get_by_role("button", name="Disable").click()
    dialog.get_by_role("button", name="Disable").click()
    page.get_by_text("Agent doomed-host disabled.").wait_for()
    assert "disabled" in row.inner_text()
    assert agent.post("next_run").status_code == 401  # its token no longer works

    row.get_by_role("button", name="Delete").click()
    dialog.get_by_role("button", name="Delete").click()
    page.get_by_text("Agent deleted.").wait_for()
    assert row.count() == 0
    assert web.api("GET", f"/agents/{agent.agent_id}").status_code == 404
