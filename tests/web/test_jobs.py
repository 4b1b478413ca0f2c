"""Jobs list and job wizard in a real browser: actions by role (the server refuses what the
page hides), the wizard completed by clicks for a disk-image job (file picked in the file
browser that a real `e3backup agent run` answers, connection test answered by it) and for a
KVM job (VMs picked in the VM browser, refreshed through list_vms), server-side validation
shown next to its field, the schedule preview, and editing with write-only secrets."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.agent_harness import AgentProcess, agent_id_of, e3backup, wait_for

GIB = 1024**3
IMAGES = "/var/lib/libvirt/images"


def vm(uuid: str, name: str, state: str, machine: str, disks: dict[str, int]) -> dict[str, Any]:
    """One VM as the agent's inventory (agent/inventory.py) reports it."""
    return {
        "id": uuid, "vm_guid": uuid, "vm_name": name, "name": name, "hypervisor": "kvm",
        "state": state, "machine_type": machine, "change_tracking": state == "running",
        "disks": [
            {"name": f"vd{chr(97 + i)}", "path": f"{IMAGES}/{file}", "format": file.rsplit(".")[-1],
             "size_bytes": size}
            for i, (file, size) in enumerate(disks.items())
        ],
    }  # fmt: skip


WEB01 = "6f1c0f7e-0000-4000-8000-000000000001"
DB01 = "6f1c0f7e-0000-4000-8000-000000000002"
INVENTORY = [
    vm(
        WEB01, "web01", "running", "pc-q35-8.2", {"web01.qcow2": 20 * GIB, "web01-b.raw": 100 * GIB}
    ),
    vm(DB01, "db01", "off", "pc-i440fx-8.2", {"db01.raw": 40 * GIB}),
]
BUILD01 = {**INVENTORY[1], "id": "build-uuid", "vm_guid": "build-uuid", "vm_name": "build01"}


def csrf(page: Any) -> str:
    return str(page.locator('meta[name="csrf-token"]').get_attribute("content"))


def next_step(page: Any, heading: str) -> None:
    """Next, then the new step's heading has the focus (keyboard and screen reader users)."""
    page.get_by_role("button", name="Next").click()
    title = page.get_by_role("heading", name=heading)
    title.wait_for()
    assert page.evaluate("document.activeElement.textContent") == heading


def test_jobs_list_and_actions_by_role(page_as, web, check_page) -> None:
    tenant_id = web.new_tenant("jobs-tenant")
    agent = web.enroll_new("jobs-host", tenant="jobs-tenant")
    admin = page_as("admin")
    admin.get_by_label("Tenant").select_option(str(tenant_id))
    admin.get_by_text("Switched tenant.").wait_for()
    admin.goto("/jobs")
    admin.get_by_text("No jobs yet").wait_for()
    assert admin.get_by_role("link", name="Create a job").is_visible()
    check_page(admin, "jobs-empty")

    job = web.finished_run(agent, "nightly-image", "success")
    viewer = page_as("viewer")
    viewer.goto("/jobs")
    row = viewer.locator(f'tr[data-job-id="{job["id"]}"]')
    text = row.inner_text()
    assert "nightly-image" in text and "jobs-host" in text and "daily at 03:00 (UTC)" in text
    assert "success" in text and "enabled" in text
    assert row.get_by_role("button").count() == 0 and row.get_by_role("link").count() == 0
    assert viewer.get_by_role("link", name="New job").count() == 0
    for action in ("run", "delete", "disable"):
        refused = viewer.request.post(
            f"/jobs/{job['id']}/{action}", form={"csrf_token": csrf(viewer)}
        )
        assert refused.status == 403, action
    runs = web.api("GET", "/runs", params={"job_id": job["id"]}).json()
    assert runs["total"] == 1
    assert web.api("GET", f"/jobs/{job['id']}").json()["enabled"] is True

    operator = page_as("operator")
    operator.goto("/jobs")
    row = operator.locator(f'tr[data-job-id="{job["id"]}"]')
    assert row.get_by_role("link", name="Edit").count() == 0
    row.get_by_role("button", name="Run nightly-image now").click()
    operator.get_by_text(re.compile(r"Run #\d+ queued")).wait_for()
    assert "queued" in row.inner_text()

    admin.goto("/jobs")
    row = admin.locator(f'tr[data-job-id="{job["id"]}"]')
    row.get_by_role("button", name="Disable").click()
    admin.get_by_text("Job nightly-image disabled").wait_for()
    assert "disabled" in row.inner_text()
    check_page(admin, "jobs")
    row.get_by_role("button", name="Enable").click()
    admin.get_by_text("Job nightly-image enabled.").wait_for()
    row.get_by_role("button", name="Delete").click()
    admin.get_by_role("dialog").get_by_role("button", name="Delete").click()
    admin.get_by_text("Job nightly-image deleted").wait_for()
    assert row.count() == 0
    assert web.api("GET", f"/jobs/{job['id']}").status_code == 404


@pytest.fixture(scope="module")
def host_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the real agent browses: a folder, an image file, a file inside the folder."""
    root = tmp_path_factory.mktemp("agent-host")
    (root / "zz-folder").mkdir()
    (root / "zz-folder" / "inner.txt").write_text("inside")
    (root / "disk.img").write_bytes(b"\0" * 1024 * 1024)
    return root


@pytest.fixture(scope="module")
def real_agent(web, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """`e3backup agent enroll` + `e3backup agent run` against the session's server."""
    from e3backup.agent.config import load_config, save_config

    config = tmp_path_factory.mktemp("real-agent") / "agent.toml"
    token = web.server.admin("enrollment-token", "create", "--tenant", "msp")["token"]
    e3backup("agent", "enroll", "--server", web.url, "--token", token, "--config", config)
    settings = load_config(config)
    settings.poll_interval_s = 0.5  # answer commands quickly (the server default is 5 s)
    save_config(settings)
    agent = AgentProcess(config).start()
    try:
        yield agent_id_of(config)
    finally:
        agent.stop()


def test_wizard_disk_image_job_with_the_file_browser(
    page_as, web, check_page, real_agent, host_dir
) -> None:
    page = page_as("admin")
    page.goto("/jobs")
    page.get_by_role("link", name="New job").click()
    page.get_by_role("heading", name="1. Job and engine").wait_for()
    check_page(page, "job-wizard-1-engine")
    page.get_by_label("Job name").fill("image-from-ui")
    page.get_by_label("Disk image").check()

    next_step(page, "2. Agent")
    choice = page.locator(f'label[data-agent-id="{real_agent}"]')
    assert "online" in choice.inner_text()
    choice.get_by_role("radio").check()
    check_page(page, "job-wizard-2-agent")

    next_step(page, "3. Source")
    browser = page.locator("#file-browser")
    browser.get_by_role("button", name="/").wait_for()  # the roots the agent answered
    page.get_by_label("Path to open or add").fill(str(host_dir))
    page.get_by_role("button", name="Open").click()
    browser.get_by_text("disk.img", exact=True).wait_for()
    names = browser.locator(".entry-name").all_inner_texts()
    assert names == ["zz-folder", "disk.img"], names  # folders first
    assert "1.00 MiB" in browser.locator('li[data-path$="disk.img"]').inner_text()
    browser.get_by_role("button", name="zz-folder").click()  # lazy: one level per answer
    browser.get_by_text("inner.txt", exact=True).wait_for()
    browser.get_by_role("navigation", name="Folder path").get_by_role(
        "button", name=host_dir.name
    ).click()
    browser.get_by_label("Select disk.img").check()
    assert page.get_by_label("Disk, volume or image file").input_value() == str(
        host_dir / "disk.img"
    )
    check_page(page, "job-wizard-3-source-files")

    next_step(page, "4. Destination")
    repo = host_dir / "repo"
    page.get_by_label("Repository path on the agent's host").fill(str(repo))
    page.get_by_label("Repository password").fill("wizard-repo-password")
    page.get_by_role("button", name="Test connection").click()
    answer = page.locator("#test-result .test-answer")
    answer.wait_for(timeout=60_000)
    assert "success" in answer.inner_text() and "no repository yet" in answer.inner_text()
    check_page(page, "job-wizard-4-destination")

    next_step(page, "5. Schedule")
    page.get_by_label("Runs", exact=True).select_option("daily")
    page.get_by_label("At (24-hour time)").fill("02:30")
    preview = page.locator("#preview-times li")
    wait_for(
        lambda: preview.count() == 5 and "02:30" in preview.all_inner_texts()[0], 15, "the preview"
    )
    times = preview.all_inner_texts()
    assert all(" 02:30 " in t for t in times) and len(set(times)) == 5, times
    check_page(page, "job-wizard-5-schedule")

    next_step(page, "6. Retention and policy")
    page.get_by_label("Daily", exact=True).fill("14")
    page.get_by_label("Compression").select_option("zstd-3")
    check_page(page, "job-wizard-6-policy")

    next_step(page, "7. Review")
    summary = page.locator("#review-summary").inner_text()
    for expected in (
        "image-from-ui",
        str(host_dir / "disk.img"),
        str(repo),
        "daily at 02:30",
        "daily 14",
    ):
        assert expected in summary, (expected, summary)
    assert "wizard-repo-password" not in page.content()
    check_page(page, "job-wizard-7-review")
    page.get_by_role("button", name="Create job").click()
    page.get_by_text("Job image-from-ui saved.").wait_for()

    job = _job_named(web, "image-from-ui")
    assert job["engine"] == "disk_image" and job["agent_id"] == real_agent
    assert job["disk_source_volume"] == str(host_dir / "disk.img")
    assert job["dest_type"] == "local" and job["dest_local_path"] == str(repo)
    assert job["has_repository_password"] is True
    assert job["schedule_json"]["type"] == "daily" and job["schedule_json"]["time"] == "02:30"
    assert job["retention_json"]["keep_daily"] == 14
    assert job["policy_json"]["compression"] == "zstd-3"


def _job_named(web, name: str) -> dict[str, Any]:
    items = web.api("GET", "/jobs", params={"limit": 500}).json()["items"]
    found: dict[str, Any] = next(j for j in items if j["name"] == name)
    return found


def _answer_list_vms(agent, inventory: list[dict[str, Any]]) -> None:
    """The fake agent's side of Refresh: take the list_vms command, report the inventory."""

    def command() -> dict[str, Any] | None:
        found = agent.post("poll_commands").json()["commands"]
        return next((c for c in found if c["type"] == "list_vms"), None)

    queued = wait_for(command, 15, "the list_vms command")
    body = {"vms": inventory, "command_id": queued["command_id"]}
    assert agent.post("report_vms", body).status_code == 200


def test_wizard_kvm_job_with_the_vm_browser_validation_and_edit(
    page_as, web, check_page, errors
) -> None:
    errors.allow("status of 422")  # the refused save answers 422 with the wizard again
    agent = web.enroll_new("kvm-host")
    assert agent.post("report_vms", {"vms": INVENTORY}).status_code == 200
    page = page_as("admin")
    page.goto("/jobs/new")
    page.get_by_label("Job name").fill("vms-from-ui")
    page.get_by_label("KVM VMs").check()
    next_step(page, "2. Agent")
    page.locator(f'label[data-agent-id="{agent.agent_id}"]').get_by_role("radio").check()
    next_step(page, "3. Source")
    vms = page.locator("#vm-browser")
    web01 = vms.locator(f'tr[data-vm="{WEB01}"]')
    web01.wait_for()
    row = web01.inner_text()
    assert "running" in row and "pc-q35-8.2" in row and "20.0 GiB" in row and "100 GiB" in row, row
    assert "off" in vms.locator("tr", has_text="db01").inner_text()

    vms.get_by_role("button", name="Refresh from the agent").click()
    vms.get_by_text("Waiting for the agent").wait_for()
    _answer_list_vms(agent, [*INVENTORY, BUILD01])
    vms.get_by_text("build01").wait_for()
    vms.get_by_label("web01").check()
    vms.get_by_label("db01").check()
    assert page.get_by_text("2 VMs selected").is_visible()
    check_page(page, "job-wizard-3-source-vms")

    next_step(page, "4. Destination")
    page.get_by_label("Repository path on the agent's host").fill("/srv/repos/vms")
    page.get_by_label("Repository password").fill("vm-repo-password")
    next_step(page, "5. Schedule")
    page.get_by_label("Runs", exact=True).select_option("cron")
    page.get_by_label("Cron expression").fill("every night")
    page.locator("#schedule-preview").get_by_text(
        "five fields"
    ).wait_for()  # the preview says so too
    next_step(page, "6. Retention and policy")
    next_step(page, "7. Review")
    page.get_by_role("button", name="Create job").click()

    # refused by the service: the schedule step again, the message at the cron field
    error = page.locator("#schedule_cron-error")
    error.wait_for()
    assert "five fields" in error.inner_text()
    cron = page.get_by_label("Cron expression")
    assert cron.get_attribute("aria-invalid") == "true" and cron.input_value() == "every night"
    assert page.evaluate("document.activeElement.id") == "f-schedule_cron"
    assert page.get_by_label("Job name").input_value() == "vms-from-ui"  # kept, on step 1
    assert page.locator('input[type="hidden"][name="vms"]').count() == 2
    check_page(page, "job-wizard-error")
    cron.fill("15 3 * * 1-5")
    wait_for(lambda: page.locator("#preview-times li").count() == 5, 15, "the preview")
    page.get_by_role("button", name="4 Destination").click()
    page.get_by_label("Repository password").fill("vm-repo-password")  # never echoed back
    page.get_by_role("button", name="7 Review").click()
    page.get_by_role("button", name="Create job").click()
    page.get_by_text("Job vms-from-ui saved.").wait_for()
    job = _job_named(web, "vms-from-ui")
    assert job["engine"] == "kvm" and job["vms"] == [
        INVENTORY[0]["vm_guid"],
        INVENTORY[1]["vm_guid"],
    ]
    assert job["schedule_json"] == {"type": "cron", "cron": "15 3 * * 1-5"} | {
        k: v for k, v in job["schedule_json"].items() if k not in ("type", "cron")
    }
    assert job["vm_config"]["enable_rct"] is True and job["has_repository_password"]

    page.locator(f'tr[data-job-id="{job["id"]}"]').get_by_role("link", name="Edit").click()
    page.get_by_label("Job name").fill("vms-renamed")
    page.get_by_role("button", name="4 Destination").click()
    assert page.get_by_label("Repository password").get_attribute("placeholder") == "unchanged"
    page.get_by_role("button", name="7 Review").click()
    assert "unchanged" in page.locator("#review-summary").inner_text()
    page.get_by_role("button", name="Save changes").click()
    page.get_by_text("Job vms-renamed saved.").wait_for()
    edited = web.api("GET", f"/jobs/{job['id']}").json()
    assert edited["has_repository_password"] and edited["vms"] == job["vms"]
    assert edited["schedule_json"]["cron"] == "15 3 * * 1-5"
