"""VMs & backup points and the restore wizard in a real browser: the backup point a VM run's
results made, the wizard by clicks to a restore run and its queued command (the agent side
driven through the agent API), the seed 001 errors, and a viewer who cannot restore."""

from __future__ import annotations

from agent_sim import SimRun, finished_vm_backup, vm_result

ROOT_DISK = "/var/lib/libvirt/images/{vm}-root.qcow2"
DATA_DISK = "/var/lib/libvirt/images/{vm}-data.qcow2"


def _report_vms(agent, *names: str) -> None:
    vms = [
        {
            "vm_guid": f"uuid-{name}",
            "vm_name": name,
            "state": "running",
            "machine_type": "q35",
            "disks": [
                {"disk_path": ROOT_DISK.format(vm=name), "size_bytes": 2 * 2**30},
                {"disk_path": DATA_DISK.format(vm=name), "size_bytes": 2**30},
            ],
        }
        for name in names
    ]
    assert agent.post("report_vms", {"vms": vms}).is_success


def test_restore_wizard_to_the_restore_run(page_as, web, check_page) -> None:
    agent = web.enroll_new("restore-host")
    _report_vms(agent, "web01")
    finished_vm_backup(web, agent, "restore-vms", [vm_result("web01")])
    vm_id = web.api("GET", "/vms", params={"agent_id": agent.agent_id}).json()["items"][0]["id"]

    page = page_as("operator")
    page.goto("/vms")
    row = page.locator(f'#vms tr[data-vm-id="{vm_id}"]')
    text = row.inner_text()
    assert "web01" in text and "restore-host" in text and "application-consistent" in text, text
    check_page(page, "vms")
    row.get_by_role("link", name="Backup points of web01").click()
    point = page.locator("#backup-points tbody tr")
    assert point.count() == 1
    assert "restorable" in point.inner_text() and "Full" in point.inner_text()
    assert page.locator("#vm-disks").inner_text().count("qcow2") == 2
    page.get_by_role("link", name="Incremental").click()
    page.get_by_text("No Incremental backup points").wait_for()
    check_page(page, "vm-points")

    page.goto("/vms")
    row.get_by_role("link", name="Restore web01").click()
    page.locator("#backup-points input[type=radio]").first.check()
    check_page(page, "restore-1-point")
    page.get_by_role("button", name="Next: disks and target").click()
    page.get_by_label("web01-data.qcow2").uncheck()
    page.get_by_label("Target path on the agent").fill("/srv/restored/web01")
    page.get_by_label("Disk format").select_option("raw")
    check_page(page, "restore-2-configure")
    page.get_by_role("button", name="Next: review").click()
    review = page.locator("#review").inner_text()
    assert "web01-root.qcow2" in review and "web01-data" not in review, review
    assert "/srv/restored/web01" in review and "raw" in review
    check_page(page, "restore-3-review")
    page.get_by_role("button", name="Start restore").click()

    page.get_by_text("Restore started").wait_for()
    run_id = int(page.locator("#live").get_attribute("data-run-id"))
    assert page.url.endswith(f"/runs/{run_id}/live")
    assert "/srv/restored/web01" in page.locator("#restore-info").inner_text()
    restore = SimRun(agent, run_id)
    command = restore.poll_commands()["commands"][0]  # what the agent gets
    assert command["type"] == "hyperv_restore" and command["run_id"] == run_id, command
    payload = command["payload"]
    assert payload["target_path"] == "/srv/restored/web01" and payload["format"] == "raw"
    assert list(payload["disk_manifests"]) == [ROOT_DISK.format(vm="web01")]

    restore.update(status="running", progress_pct=40, bytes_total=2 * 2**30)
    names = {"disk_name": "web01-root.qcow2", "disk_index": 1, "total_disks": 1}
    restore.events(("r1", "HYPERV_RESTORE_DISK_STARTING", names))
    page.locator("#run-items tr", has_text="web01-root.qcow2").get_by_text("running").wait_for()
    restore.events(("r2", "HYPERV_RESTORE_DISK_COMPLETE", names))
    restore.update(status="success", progress_pct=100)
    done = {"command_id": command["command_id"], "status": "completed", "result": {"restored": 1}}
    assert agent.post("complete_command", done).is_success
    page.locator("#live[data-polling='stopped']").wait_for()
    assert page.locator("#live-status").inner_text() == "success"
    assert page.locator("#progress-text").inner_text() == "100.0 %"
    assert "success" in page.locator("#run-items tr", has_text="web01-root.qcow2").inner_text()
    check_page(page, "live-restore")


def test_restore_errors_are_shown_clearly(page_as, web, errors) -> None:
    errors.allow("422")  # the wizard answers a refused step with 422
    errors.allow("404")
    agent = web.enroll_new("broken-host")
    finished_vm_backup(web, agent, "broken-vms", [vm_result("nodisks", manifests=False)])
    point = web.api("GET", "/backup_points", params={"agent_id": agent.agent_id}).json()
    point_id = point["items"][0]["id"]
    page = page_as("operator")

    page.goto(f"/restore?vm_id={point['items'][0]['vm_id']}")
    radio = page.locator(f'#backup-points tr[data-point-id="{point_id}"] input[type=radio]')
    assert radio.is_disabled()
    assert "not restorable" in page.locator("#backup-points").inner_text()
    page.goto(f"/restore?point_id={point_id}")
    assert "not restorable" in page.locator("#not-restorable").inner_text()
    assert page.get_by_role("button", name="Next: review").is_disabled()
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    refused = page.request.post(
        "/restores", form={"csrf_token": token, "point_id": str(point_id), "target_path": "/x"}
    )
    assert refused.status == 422 and "Restore chain is broken" in refused.text()

    good = finished_vm_backup(web, agent, "good-vms", [vm_result("ok01")])
    good_point = web.api("GET", "/backup_points", params={"job_id": _job_of(web, good)}).json()
    good_id = good_point["items"][0]["id"]
    page.goto(f"/restore?point_id={good_id}&step=3&target_path=")  # the form requires it
    assert "target_path is required" in page.locator("#target_path-error").inner_text()
    page.goto(f"/restore?point_id={good_id}&step=3&target_path=/srv/x")  # no disk ticked
    assert "No disks selected" in page.locator("#disk_filter-error").inner_text()
    page.goto("/restore?point_id=999999")
    assert "Backup point not found" in page.locator(".error-message").inner_text()

    assert web.api("POST", f"/agents/{agent.agent_id}/disable").is_success
    page.goto(f"/restore?point_id={good_id}")
    assert "broken-host is offline" in page.locator("#agent-offline").inner_text()


def _job_of(web, run: SimRun) -> int:
    job_id: int = web.api("GET", f"/runs/{run.run_id}").json()["job_id"]
    return job_id


def test_viewer_cannot_restore(page_as, web, errors) -> None:
    agent = web.enroll_new("viewer-restore-host")
    finished_vm_backup(web, agent, "viewer-vms", [vm_result("v01")])
    page = page_as("viewer")
    page.goto("/vms")
    page.locator("#vms tr", has_text="v01").wait_for()
    assert page.get_by_role("link", name="Restore v01").count() == 0
    page.get_by_role("link", name="Backup points of v01").click()
    assert page.locator("#backup-points tbody tr").count() == 1
    assert page.get_by_role("link", name="Restore", exact=False).count() == 0
    point_id = page.locator("#backup-points tbody tr").get_attribute("data-point-id")
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    errors.allow("403")
    assert page.goto(f"/restore?point_id={point_id}").status == 403
    form = {"csrf_token": token, "point_id": point_id, "target_path": "/srv/x"}
    assert page.request.post("/restores", form=form).status == 403
