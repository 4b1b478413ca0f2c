"""`e3backup quickstart` for real (the README's first command): a detached server and agent, a
first backup through the API, a person signing in to the web UI with the printed password and
seeing the backup, idempotent re-runs, a restart after a stale PID file, `--stop`, and the
refusals (port in use, a PID file naming a process it did not start)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_harness import Cli, Run, assert_one_line_error

from e3backup.cli.quickstart_setup import Layout, stop_all
from e3backup.exec import pidfile
from fixtures.seaweed_process import free_ports

SAMPLE = "32M"
RUN_TIMEOUT_S = 300


@pytest.fixture
def demo_dir(tmp_path: Path) -> Iterator[Path]:
    """The quickstart directory; whatever it left running is stopped by its PID files."""
    directory = tmp_path / "demo"
    yield directory
    stop_all(Layout.at(directory))


def quickstart(directory: Path, port: int, *args: str) -> Run:
    return Cli(directory / "unused-repo").run(
        "quickstart",
        "--dir",
        directory,
        "--listen",
        f"127.0.0.1:{port}",
        "--sample-size",
        SAMPLE,
        *args,
        timeout_s=RUN_TIMEOUT_S,
    )


def api(directory: Path, url: str) -> httpx.Client:
    token = (directory / "api-token").read_text().strip()
    return httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"})


def wait_gone(pid: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not gone(pid):
        assert time.monotonic() < deadline, f"PID {pid} still running after {timeout_s:.0f} s"
        time.sleep(0.1)


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"  # exited, not yet reaped


def assert_backed_up(directory: Path, summary: dict[str, Any]) -> None:
    with api(directory, summary["server_url"]) as client:
        run = client.get(f"/api/v1/runs/{summary['run_id']}").json()
        assert run["status"] == "success", run
        points = client.get("/api/v1/backup_points").json()["items"]
        assert summary["backup_point_id"] in [p["id"] for p in points if p["run_id"] == run["id"]]
        agent = client.get(f"/api/v1/agents/{summary['agent_id']}").json()
        assert agent["online"], agent
        assert len(client.get("/api/v1/jobs").json()["items"]) == 1


def sign_in_and_see_the_backup(browser: Any, directory: Path, summary: dict[str, Any]) -> None:
    """What a person does next: open the printed URL, sign in with the printed password, see
    the sample job's run on the dashboard and its repository, and its backup point through the
    client API with the browser's session cookie."""
    problems: list[str] = []
    context = browser.new_context(base_url=summary["server_url"])
    try:
        page = context.new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.goto("/")
        page.get_by_label("Email").fill(summary["email"])
        page.get_by_label("Password").fill(summary["admin_password"])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r".*/$"))
        assert page.locator("#runs-24h").inner_text() == "1"
        assert re.search(r"success\s+1", page.locator("#run-counts").inner_text())
        assert page.locator("#agents-online").inner_text() == "1"
        storage = page.locator("#repositories").inner_text()
        assert str(directory / "repo") in storage and "quickstart disk image" in storage, storage
        page.goto("/repositories")
        card = page.locator("article.repo-card", has_text=str(directory / "repo"))
        assert card.locator(".repo-snapshots").inner_text() == "1"
        assert str(directory / "disk.img") in card.locator(".repo-sources").inner_text()
        points = page.request.get("/api/v1/backup_points").json()["items"]
        (point,) = [p for p in points if p["id"] == summary["backup_point_id"]]
        assert point["job_id"] == summary["job_id"] and point["is_restorable"], point
    finally:
        context.close()
    assert not problems, problems


def test_quickstart_server_agent_backup_rerun_and_stop(demo_dir: Path, browser: Any) -> None:
    port = free_ports(1)[0]
    first = quickstart(demo_dir, port, "--json")
    assert first.returncode == 0, first.describe()
    summary = first.json()
    assert summary["server_url"] == f"http://127.0.0.1:{port}"
    assert summary["api_docs_url"] == f"http://127.0.0.1:{port}/api/docs"
    assert_backed_up(demo_dir, summary)
    for secret in ("admin-password", "api-token", "agent.toml"):
        assert oct((demo_dir / secret).stat().st_mode & 0o777) == "0o600", secret
    password = (demo_dir / "admin-password").read_text().strip()
    assert summary["admin_password"] == password and summary["email"] == "admin@demo.local"
    sign_in_and_see_the_backup(browser, demo_dir, summary)
    with httpx.Client(base_url=summary["server_url"], timeout=30) as client:
        login = client.post(
            "/api/v1/auth/login", json={"email": "admin@demo.local", "password": password}
        )
        assert login.status_code == 200, login.text
        assert client.get(summary["api_docs_url"]).status_code == 200

    again = quickstart(demo_dir, port)
    assert again.returncode == 0, again.describe()
    assert "server already running" in again.stdout and "agent already running" in again.stdout
    assert password not in again.stdout, "the password is shown once, when it is made"
    assert (demo_dir / "admin-password").read_text().strip() == password
    summary_lines = again.stdout[again.stdout.index("open http") :].splitlines()
    assert summary_lines[0] == (
        f"open {summary['server_url']} and sign in as admin@demo.local "
        f"(password in {demo_dir / 'admin-password'})"
    ), "the summary starts with the UI's URL"
    assert "/api/v1/backup_points" in again.stdout and "quickstart --stop" in again.stdout

    os.kill(summary["server_pid"], signal.SIGKILL)  # its PID file is now stale
    wait_gone(summary["server_pid"])
    restarted = quickstart(demo_dir, port, "--json")
    assert restarted.returncode == 0, restarted.describe()
    third = restarted.json()
    assert third["admin_password"] is None, "printed once, on the run that made it"
    assert third["server_pid"] != summary["server_pid"]
    assert third["agent_pid"] == summary["agent_pid"]
    assert_backed_up(demo_dir, third)

    stopped = quickstart(demo_dir, port, "--stop", "--json")
    assert stopped.returncode == 0, stopped.describe()
    assert stopped.json()["stopped"] == {"agent": third["agent_pid"], "server": third["server_pid"]}
    for pid in (third["agent_pid"], third["server_pid"]):
        wait_gone(pid)
    assert not (demo_dir / "server.pid").exists() and not (demo_dir / "agent.pid").exists()
    assert (demo_dir / "repo").is_dir() and (demo_dir / "server").is_dir(), "data is kept"


def test_port_in_use_is_a_clear_error(demo_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = quickstart(demo_dir, port)
    assert_one_line_error(result, f"127.0.0.1:{port}", "--listen")
    assert result.returncode == 2
    assert not (demo_dir / "server.pid").exists()


def test_stop_never_signals_a_process_it_did_not_start(demo_dir: Path) -> None:
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        demo_dir.mkdir()
        pidfile.write_pid(demo_dir / "server.pid", stranger.pid)
        pidfile.write_pid(demo_dir / "agent.pid", stranger.pid)
        result = quickstart(demo_dir, free_ports(1)[0], "--stop", "--json")
        assert result.returncode == 0, result.describe()
        assert result.json()["stopped"] == {"agent": None, "server": None}
        assert stranger.poll() is None, "a process quickstart did not start was signalled"
        assert not (demo_dir / "server.pid").exists(), "the stale PID file is cleared"
    finally:
        stranger.kill()
        stranger.wait()
