"""Runs history, run detail and the live progress page in a real browser, with the run driven
through the real agent API as an agent would (tests/web/agent_sim.py)."""

from __future__ import annotations

import re

from agent_sim import create_job, start_run, vm_result

LIVE_JSON = "/live.json"
POLL_MS = 2000  # routes_live.LIVE_POLL_MS
CHECKPOINT = "HYPERV_CHECKPOINT_CREATED"
APP = {"vm_name": "alpha", "consistency_level": "Application"}


def _requests_to(page, fragment: str) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda req: seen.append(req.url) if fragment in req.url else None)
    return seen


def _event_ids(page) -> list[str]:
    return page.locator("#event-log li").evaluate_all(
        "items => items.map(li => li.dataset.eventId)"
    )


def test_live_page_follows_a_vm_backup_to_success(page_as, web, check_page) -> None:
    agent = web.enroll_new("live-host")
    job_id = create_job(web, agent, "live-vms", ["alpha", "beta"])
    run = start_run(web, agent, job_id)
    page = page_as("operator")
    polls = _requests_to(page, f"/runs/{run.run_id}{LIVE_JSON}")
    page.goto(f"/runs/{run.run_id}/live")
    assert page.locator("#live-status").inner_text() == "queued"
    assert (
        page.locator("#run-items tr", has_text="alpha").locator(".badge").inner_text() == "queued"
    )

    run.claim()
    run.update(status="running", progress_pct=12.5, bytes_processed=2**30, bytes_total=8 * 2**30)
    run.events(("e1", "HYPERV_VM_STARTING", {"vm_name": "alpha"}), ("e2", CHECKPOINT, APP))
    page.locator("#progress-text", has_text="12.5 %").wait_for()
    assert page.locator("#live-status").inner_text() == "running"
    assert page.locator("#progress-bar").get_attribute("aria-valuenow") == "12.5"
    assert page.locator("#stat-processed").inner_text() == "1.00 GiB"
    page.locator("#run-items tr", has_text="alpha").get_by_text("running").wait_for()

    run.update(
        progress_pct=60,
        bytes_processed=5 * 2**30,
        bytes_transferred=2**30,
        speed_bytes_per_sec=50 * 2**20,
        eta_seconds=90,
        current_item="beta-root.qcow2",
    )
    again = run.events(  # e2 again: an agent retrying a push; stored and shown once
        ("e2", CHECKPOINT, APP),
        ("e3", "HYPERV_VM_COMPLETE", {**APP, "backup_type": "Full"}),
        ("e4", "HYPERV_VM_STARTING", {"vm_name": "beta"}),
    )
    assert again == {"accepted": 2, "duplicates": 1}
    page.locator("#stat-current", has_text="beta-root.qcow2").wait_for()
    assert page.locator("#stat-uploaded").inner_text() == "1.00 GiB"
    assert page.locator("#stat-dedup").inner_text() == "80.0 % saved by dedup"
    assert page.locator("#stat-speed").inner_text() == "50.0 MiB/s"
    assert page.locator("#stat-eta").inner_text() == "1 min 30 s"
    page.locator("#run-items tr", has_text="alpha").get_by_text("success").wait_for()
    check_page(page, "live-running")

    run.events(("e5", "HYPERV_BACKUP_COMPLETE", {"message": "2 of 2 VMs backed up"}))
    run.update(
        status="success", progress_pct=100, vm_results=[vm_result("alpha"), vm_result("beta")]
    )
    page.locator("#live[data-polling='stopped']").wait_for()
    assert page.locator("#live-status").inner_text() == "success"
    assert "badge-success" in page.locator("#live-status").get_attribute("class")
    assert page.locator("#progress-text").inner_text() == "100.0 %"
    assert page.locator("#progress-bar").get_attribute("aria-valuenow") == "100"
    beta = page.locator("#run-items tr", has_text="beta").inner_text()
    assert "success" in beta and "Full, Application-consistent" in beta, beta
    ids = [int(i) for i in _event_ids(page)]
    assert ids == sorted(ids) and len(ids) == len(set(ids)) == 5, ids
    messages = page.locator("#event-log .event-message").all_inner_texts()
    assert messages[0] == "Starting backup of virtual machine 'alpha'."
    assert messages[-1] == "2 of 2 VMs backed up"
    assert page.get_by_role("button", name="Cancel run").count() == 0

    seen = len(polls)  # polling stopped: no request for a few more intervals
    page.wait_for_timeout(POLL_MS * 2.5)
    assert len(polls) == seen, polls[seen:]


def test_cancel_from_the_live_page(page_as, web, check_page) -> None:
    agent = web.enroll_new("cancel-host")
    run = start_run(web, agent, create_job(web, agent, "live-cancel"))
    run.claim()
    run.update(status="running", progress_pct=20, bytes_processed=2**20)
    page = page_as("operator")
    page.goto(f"/runs/{run.run_id}/live")
    page.locator("#progress-text", has_text="20.0 %").wait_for()

    page.get_by_role("button", name="Cancel run").click()
    dialog = page.get_by_role("dialog")
    assert f"Cancel run #{run.run_id}?" in dialog.inner_text()
    dialog.get_by_role("button", name="Cancel run").click()
    page.get_by_text(f"Cancel requested for run #{run.run_id}").wait_for()
    assert page.locator("#cancel-flag").is_visible()
    assert page.locator("#cancel-button").is_disabled()
    assert page.locator("#live-status").inner_text() == "running"
    page.locator(".event-message", has_text="cancellation requested").wait_for()

    assert run.poll_commands()["cancel_requested"] is True  # what the agent sees
    assert run.update(progress_pct=25)["cancel_requested"] is True
    run.events(("c1", "CANCELLED", {}))
    run.update(status="cancelled", error="cancel requested by user")  # as the agent reports it
    page.locator("#live[data-polling='stopped']").wait_for()
    assert not page.locator("#live-error").is_visible()  # a cancel is not shown as an error
    assert page.locator("#live-status").inner_text() == "cancelled"
    assert "badge-cancelled" in page.locator("#live-status").get_attribute("class")
    assert not page.locator("#cancel-flag").is_visible()
    assert not page.locator("#cancel-form").is_visible()
    assert page.locator(".event-message").last.inner_text() == "Operation was cancelled."
    check_page(page, "live-cancelled")


def test_runs_history_filters_pages_and_detail(page_as, web, check_page) -> None:
    agent = web.enroll_new("history-host")
    job_id = create_job(web, agent, "history-job")
    run_ids = []
    for i in range(27):
        run = start_run(web, agent, job_id)
        run.claim()
        run.update(status="running")
        run.update(status="failed" if i == 3 else "success", bytes_transferred=1000 + i)
        run_ids.append(run.run_id)
    failed = run_ids[3]
    run = start_run(web, agent, job_id)  # the newest run has events and log lines
    run.claim()
    run.update(status="running")
    run.events(("d1", "BACKUP_STARTING", {}), ("d2", "BACKUP_FAILED", {"error": "disk gone"}))
    logs = {"run_id": run.run_id, "lines": [{"message": "reading /dev/vg0/root", "level": "info"}]}
    assert agent.post("push_logs", logs).is_success
    run.update(status="failed", error="disk gone", error_code="SOURCE_MISSING")

    page = page_as("viewer")
    page.goto("/runs")
    page.get_by_label("Job").select_option(str(job_id))
    page.get_by_role("button", name="Apply filters").click()
    assert page.locator("#runs-total").inner_text() == "28 runs"
    assert page.locator("#runs tbody tr").count() == 25
    page.get_by_role("link", name="Next").click()
    assert page.locator("#runs tbody tr").count() == 3
    assert f"job={job_id}" in page.url and "offset=25" in page.url
    page.get_by_role("link", name="Previous").click()
    assert page.locator("#runs tbody tr").first.get_attribute("data-run-id") == str(run.run_id)

    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Apply filters").click()
    shown = page.locator("#runs tbody tr").evaluate_all("rows => rows.map(r => +r.dataset.runId)")
    assert shown == [run.run_id, failed]
    check_page(page, "runs")

    page.locator("#filter-since").fill("2001-01-01")
    page.locator("#filter-until").fill("2001-01-31")
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_text("No runs match these filters").wait_for()
    page.get_by_role("link", name="Clear filters").first.click()
    assert re.search(r"/runs$", page.url)

    page.goto(f"/runs/{run.run_id}")
    assert "disk gone" in page.locator("#run-error").inner_text()
    assert "SOURCE_MISSING" in page.locator("#run-error").inner_text()
    assert page.locator("#event-log .event-message").all_inner_texts() == [
        "Starting backup.",
        "Backup failed: disk gone.",
    ]
    assert "reading /dev/vg0/root" in page.locator("#run-logs").inner_text()
    check_page(page, "run-detail")


def test_viewer_sees_no_cancel_and_the_server_refuses_it(page_as, web) -> None:
    agent = web.enroll_new("viewer-host")
    run = start_run(web, agent, create_job(web, agent, "viewer-cancel"))
    page = page_as("viewer")
    page.goto(f"/runs/{run.run_id}/live")
    page.locator("#live[data-polling='on']").wait_for()
    assert page.get_by_role("button", name="Cancel run").count() == 0
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    answer = page.request.post(f"/runs/{run.run_id}/cancel", form={"csrf_token": token})
    assert answer.status == 403
    assert web.api("GET", f"/runs/{run.run_id}").json()["cancel_requested"] is False
