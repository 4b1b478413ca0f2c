"""Issue 11's first "Done when", end to end in a real browser: the live session server, a real
`e3backup agent run` enrolled with a token made on the Agents page, the tiny QEMU guest (TCG)
behind the agent's `[qemu]` config, and local-directory repositories. By clicks: a KVM job and
a disk-image job, run now, the live page to 100 %, the backup point, the restore wizard to a
finished restore (the restored files checked with qemu-img and sha256), a run cancelled from
the live page (its job, slowed by an upload limit, made through the client API: the wizard is
covered by the other two), and a viewer who cannot start a run."""

from __future__ import annotations

import hashlib
import random
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.agent_harness import AgentProcess, agent_id_of, configure_qemu, e3backup
from fixtures.vm import GuestImage, TestVm

MIB = 1024 * 1024
REPO_PASSWORD = "e2e-repo-password"
SLOW = {"bandwidth_limit_kbps": 512, "compression": "none"}  # the cancelled run takes ~30 s
RUN_TIMEOUT_MS = 240_000  # a TCG guest on a shared 2-core machine


@dataclass
class Host:
    """What the agent's host has: the guest, a small image (alone in its folder), a larger
    one (the cancelled run's), and the directory for repositories and restores."""

    vm: TestVm
    image: Path
    big_image: Path
    root: Path


def _random_file(path: Path, size: int, seed: int) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


@pytest.fixture(scope="module")
def host(guest_image: GuestImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    root = tmp_path_factory.mktemp("e2e-host")
    (root / "vm1").mkdir()
    vm = TestVm(guest_image, root / "vm1", "vm1")
    vm.create_disks()
    images = root / "images"
    images.mkdir()
    image = _random_file(images / "disk.img", 4 * MIB, seed=11)
    big = _random_file(root / "big.img", 16 * MIB, seed=12)
    vm.start()
    try:
        yield Host(vm, image, big, root)
    finally:
        vm.kill()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def enroll_from_the_agents_page(page: Any, web: Any, check_page: Any, host: Host) -> Path:
    """A token made on the Agents page, the command it shows run as is; the agent's config
    then points at the guest's sockets and polls quickly."""
    from e3backup.agent.config import load_config, save_config

    page.goto("/agents")
    page.get_by_label("Description").fill("e2e browser test")
    page.get_by_role("button", name="Create enrollment token").click()
    command = page.locator("#enroll-command").inner_text()
    match = re.fullmatch(rf"e3backup agent enroll --server {web.url} --token (e3e_\S+)", command)
    assert match, command
    check_page(page, "e2e-agents-token")
    config = host.root / "agent" / "agent.toml"
    e3backup("agent", "enroll", "--server", web.url, "--token", match[1], "--config", config)
    configure_qemu(config, host.vm)
    settings = load_config(config)
    settings.poll_interval_s = 0.5  # the session server tells agents 5 s
    save_config(settings)
    return config


def next_step(page: Any, heading: str) -> None:
    page.get_by_role("button", name="Next").click()
    page.get_by_role("heading", name=heading).wait_for()


@dataclass
class Wizard:
    """The job wizard by clicks as an admin; `check` runs check_page on a step when
    `every_step` (the first wizard: each step is a first visit) and always on the source."""

    page: Any
    check_page: Any
    agent_id: int
    every_step: bool = True

    def check(self, name: str, always: bool = False) -> None:
        if self.every_step or always:
            self.check_page(self.page, f"e2e-wizard-{name}")

    def create(self, name: str, engine: str, pick: Callable[[Any], None], repo: Path) -> int:
        page = self.page
        page.goto("/jobs")
        page.get_by_role("link", name="New job").click()
        page.get_by_role("heading", name="1. Job and engine").wait_for()
        page.get_by_label("Job name").fill(name)
        page.get_by_label(engine).check()
        self.check("1-engine")
        next_step(page, "2. Agent")
        choice = page.locator(f'label[data-agent-id="{self.agent_id}"]')
        assert "online" in choice.inner_text(), choice.inner_text()  # the enrolled agent runs
        choice.get_by_role("radio").check()
        self.check("2-agent")
        next_step(page, "3. Source")
        pick(page)
        self.check(f"3-source-{name}", always=True)
        next_step(page, "4. Destination")
        page.get_by_label("Repository path on the agent's host").fill(str(repo))
        page.get_by_label("Repository password").fill(REPO_PASSWORD)
        self.check("4-destination")
        next_step(page, "5. Schedule")
        page.get_by_label("Runs", exact=True).select_option("manual")
        self.check("5-schedule")
        next_step(page, "6. Retention and policy")
        self.check("6-policy")
        next_step(page, "7. Review")
        assert str(repo) in page.locator("#review-summary").inner_text()
        self.check("7-review")
        page.get_by_role("button", name="Create job").click()
        page.get_by_text(f"Job {name} saved.").wait_for()
        self.every_step = False
        return int(page.locator("tr[data-job-id]", has_text=name).get_attribute("data-job-id"))


def pick_vm(uuid: str) -> Callable[[Any], None]:
    return lambda page: _pick_vm(page, uuid)


def _pick_vm(page: Any, uuid: str) -> None:
    """The VM browser: the agent's inventory on Refresh, then the guest ticked."""
    vms = page.locator("#vm-browser")
    vms.get_by_role("button", name="Refresh from the agent").click()
    row = vms.locator(f'tr[data-vm="{uuid}"]')
    row.wait_for(timeout=60_000)
    assert "running" in row.inner_text(), row.inner_text()
    vms.get_by_label("vm1").check()
    chosen = page.locator('input[type="hidden"][name="vms"]')
    assert chosen.count() == 1 and chosen.get_attribute("value") == uuid, chosen.count()


def pick_file(image: Path) -> Callable[[Any], None]:
    return lambda page: _pick_file(page, image)


def _pick_file(page: Any, image: Path) -> None:
    """The file browser: open the image's folder on the agent, tick the image."""
    files = page.locator("#file-browser")
    files.get_by_role("button", name="/").wait_for()  # the roots the agent answered
    page.get_by_label("Path to open or add").fill(str(image.parent))
    page.get_by_role("button", name="Open").click()
    files.get_by_label(f"Select {image.name}").check()
    chosen = page.get_by_label("Disk, volume or image file").input_value()
    assert chosen == str(image), chosen


def create_job(web: Any, agent_id: int, name: str, **fields: Any) -> int:
    """Through the client API (the cancelled job: the wizard is covered by the others)."""
    body = {
        "name": name,
        "agent_id": agent_id,
        "dest_type": "local",
        "repository_password": REPO_PASSWORD,
        **fields,
    }
    answer = web.api("POST", "/jobs", json=body)
    assert answer.status_code == 201, answer.text
    job_id: int = answer.json()["id"]
    return job_id


def run_now(page: Any, name: str) -> int:
    """The Jobs page's Run now; the run's live page."""
    page.goto("/jobs")
    page.get_by_role("button", name=f"Run {name} now").click()
    flash = page.get_by_text(re.compile(r"Run #\d+ queued")).inner_text()
    run_id = int(flash.split("#")[1].split()[0])
    page.goto(f"/runs/{run_id}/live")
    return run_id


def assert_finished_at_100(page: Any) -> None:
    """The live page (open) until its polling stops: success at 100 %."""
    page.locator("#live[data-polling='stopped']").wait_for(timeout=RUN_TIMEOUT_MS)
    status = page.locator("#live-status").inner_text()
    assert status == "success", (status, page.locator("#live-error").inner_text())
    assert page.locator("#progress-text").inner_text() == "100.0 %"
    assert page.locator("#progress-bar").get_attribute("aria-valuenow") == "100"


def restore_by_wizard(
    page: Any, check_page: Any, name: str, target: Path, fmt: str, skip: str = ""
) -> None:
    """From step 1 (the page is on it) to the finished restore run's live page; `skip`: a
    disk not to restore."""
    page.locator("#backup-points input[type=radio]").first.check()
    check_page(page, f"e2e-restore-{name}-1-point")
    page.get_by_role("button", name="Next: disks and target").click()
    if skip:
        page.get_by_label(re.compile(rf"^{skip}\b")).uncheck()
    page.get_by_label("Target path on the agent").fill(str(target))
    page.get_by_label("Disk format").select_option(fmt)
    check_page(page, f"e2e-restore-{name}-2-configure")
    page.get_by_role("button", name="Next: review").click()
    assert str(target) in page.locator("#review").inner_text()
    check_page(page, f"e2e-restore-{name}-3-review")
    page.get_by_role("button", name="Start restore").click()
    page.get_by_text("Restore started").wait_for()
    page.locator("#live[data-polling='stopped']").wait_for(timeout=RUN_TIMEOUT_MS)
    assert page.locator("#live-status").inner_text() == "success"
    check_page(page, f"e2e-restore-{name}-live")


def kvm_backup_and_restore(page: Any, check_page: Any, wizard: Wizard, host: Host) -> None:
    wizard.create("e2e-kvm", "KVM VMs", pick_vm(host.vm.uuid), host.root / "repo-kvm")
    run_now(page, "e2e-kvm")
    assert_finished_at_100(page)
    assert "success" in page.locator("#run-items tr", has_text="vm1").inner_text()
    check_page(page, "e2e-live-kvm")

    page.goto("/vms")
    page.get_by_role("link", name="Backup points of vm1").click()
    page.wait_for_url(re.compile(r"/vms/\d+$"))
    point = page.locator("#backup-points tbody tr")
    assert point.count() == 1 and "restorable" in point.inner_text(), point.inner_text()
    check_page(page, "e2e-vm-points")
    page.goto("/vms")
    page.get_by_role("link", name="Restore vm1").click()
    target = host.root / "restored-vm"
    # only vdb: the guest never writes it, so it must equal the disk as it is now
    restore_by_wizard(page, check_page, "kvm", target, "vhdx", skip="vda")
    vhdx = target / "vdb.vhdx"
    check = subprocess.run(["qemu-img", "check", "-f", "vhdx", str(vhdx)], capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    now = host.vm.capture("vdb", host.root / "vdb-now.raw")
    same = subprocess.run(
        ["qemu-img", "compare", "-f", "vhdx", "-F", "raw", str(vhdx), str(now)],
        capture_output=True,
    )
    assert same.returncode == 0, same.stdout + same.stderr
    assert not (target / "vda.vhdx").exists()


def image_backup_and_restore(page: Any, check_page: Any, wizard: Wizard, host: Host) -> None:
    job_id = wizard.create(
        "e2e-image", "Disk image", pick_file(host.image), host.root / "repo-image"
    )
    run_now(page, "e2e-image")
    assert_finished_at_100(page)
    check_page(page, "e2e-live-image")
    page.goto(f"/backup-points?job_id={job_id}")
    point = page.locator("#backup-points tbody tr")
    assert point.count() == 1 and "restorable" in point.inner_text(), point.inner_text()
    page.get_by_role("link", name="Restore…").click()
    target = host.root / "restored-image" / "disk.img"
    restore_by_wizard(page, check_page, "image", target, "raw")
    assert sha256(target) == sha256(host.image)


def cancel_from_the_live_page(
    page: Any, web: Any, check_page: Any, agent_id: int, host: Host
) -> int:
    job_id = create_job(
        web, agent_id, "e2e-cancel", engine="disk_image", policy_json=SLOW,
        disk_source_volume=str(host.big_image), dest_local_path=str(host.root / "repo-cancel"),
    )  # fmt: skip
    run_id = run_now(page, "e2e-cancel")
    page.wait_for_function(
        "Number(document.querySelector('#progress-bar').getAttribute('aria-valuenow')) > 0",
        timeout=RUN_TIMEOUT_MS,
    )
    assert page.locator("#live-status").inner_text() == "running"
    page.get_by_role("button", name="Cancel run").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel run").click()
    page.get_by_text(f"Cancel requested for run #{run_id}").wait_for()
    page.locator("#live[data-polling='stopped']").wait_for(timeout=RUN_TIMEOUT_MS)
    assert page.locator("#live-status").inner_text() == "cancelled"
    assert page.locator(".event-message").last.inner_text() == "Operation was cancelled."
    check_page(page, "e2e-live-cancelled")
    points = web.api("GET", "/backup_points", params={"job_id": job_id}).json()
    assert points["items"] == [], points
    return job_id


def viewer_cannot_start(page_as: Any, web: Any, job_id: int) -> None:
    before = web.api("GET", "/runs", params={"job_id": job_id}).json()["total"]
    page = page_as("viewer")
    page.goto("/jobs")
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    assert "e2e-cancel" in row.inner_text()
    assert page.get_by_role("button", name=re.compile("Run")).count() == 0
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    refused = page.request.post(f"/jobs/{job_id}/run", form={"csrf_token": token})
    assert refused.status == 403, refused.status
    assert web.api("GET", "/runs", params={"job_id": job_id}).json()["total"] == before


def test_enroll_back_up_restore_and_cancel_in_the_browser(
    page_as: Any, web: Any, check_page: Any, host: Host
) -> None:
    admin = page_as("admin")  # enrolls and creates jobs; the operator runs and restores
    page = page_as("operator")
    config = enroll_from_the_agents_page(admin, web, check_page, host)
    agent_id = agent_id_of(config)
    wizard = Wizard(admin, check_page, agent_id)
    agent = AgentProcess(config).start()
    try:
        kvm_backup_and_restore(page, check_page, wizard, host)
        image_backup_and_restore(page, check_page, wizard, host)
        cancelled_job = cancel_from_the_live_page(page, web, check_page, agent_id, host)
        viewer_cannot_start(page_as, web, cancelled_job)
    finally:
        agent.stop()
    assert REPO_PASSWORD not in agent.log()
