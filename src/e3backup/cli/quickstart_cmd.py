"""`e3backup quickstart`: a control server, an enrolled local agent and a first backup, on
embedded defaults (SQLite, a local encrypted repository), all under one directory.

The server and the agent run detached with PID files, so they keep running after the command
ends; `--stop` stops them (and only them) and leaves the data. Running it again reuses what is
there and takes another backup.
"""

from __future__ import annotations

import secrets
import shlex
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TaskProgressColumn, TextColumn

from e3backup.cli import quickstart_setup as setup
from e3backup.cli.output import console, print_json
from e3backup.cli.sample_image import make_sample_image
from e3backup.core.errors import E3Error
from e3backup.core.units import format_bytes, parse_size

JOB_NAME = "quickstart disk image"
TERMINAL = ("success", "warning", "partial_success", "failed", "cancelled")
SUCCEEDED = ("success", "warning")
RUN_TIMEOUT_S = 3600.0
ONLINE_TIMEOUT_S = 60.0


class QuickstartFailed(E3Error):
    """The backup did not succeed, or the agent never came online."""

    exit_code = 1


def quickstart(
    directory: Annotated[
        Path, typer.Option("--dir", help="Directory for everything (kept between runs).")
    ] = Path("e3backup-demo"),
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT for the server.")] = (
        "127.0.0.1:8420"
    ),
    sample_size: Annotated[
        str, typer.Option("--sample-size", help="Size of the sample disk image, e.g. 64M, 1G.")
    ] = "256M",
    stop: Annotated[
        bool, typer.Option("--stop", help="Stop the server and agent started here; keep data.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Start a control server (web UI and API) and an enrolled local agent, then take a first
    backup; sign in at the printed URL with the admin e-mail and the password printed when it
    is made. Under --dir: the server's SQLite database and key (server/), the agent's config
    (agent.toml), the admin password (admin-password) and an API token (api-token), both 0600,
    a sample disk (disk.img), the encrypted repository (repo/) and logs. The repository
    password is generated and kept only by the server, encrypted. Run again: what exists is
    reused (stopped processes are restarted) and another backup is taken. --stop stops the
    server and agent by their PID files and leaves everything else. Exit 1 when the backup does
    not succeed.
    """
    layout = setup.Layout.at(directory)
    if stop:
        _stop(layout, json_out)
        return
    size_bytes = parse_size(sample_size)
    say = _Say(json_out)
    layout.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    url, server_pid = _ensure_server(layout, listen, say)
    password = setup.bootstrap_database(layout)
    if password is not None:
        say(f"tenant {setup.TENANT} and admin user {setup.ADMIN_EMAIL} created")
        say(f"  password (shown only now; kept in {layout.admin_password}, 0600): {password}")
    agent_pid = _ensure_agent(layout, url, say)
    with _Api(url, setup.read_secret(layout.api_token)) as api:
        agent_id = _agent_id(layout)
        api.wait_online(agent_id)
        job = api.job_named(JOB_NAME) or _create_job(api, layout, agent_id, size_bytes, say)
        run = _follow(api, api.run_now(job["id"]), json_out)
        point = api.point_of(job["id"], run["id"])
    summary = {
        "dir": str(layout.root),
        "server_url": url,  # the web UI: sign in there
        "email": setup.ADMIN_EMAIL,
        "admin_password": password,  # only on the run that made it (shown once), else null
        "api_docs_url": f"{url}/api/docs",
        "password_file": str(layout.admin_password),
        "api_token_file": str(layout.api_token),
        "server_pid": server_pid,
        "agent_pid": agent_pid,
        "agent_id": agent_id,
        "job_id": job["id"],
        "run_id": run["id"],
        "run_status": run["status"],
        "backup_point_id": point["id"] if point else None,
        "snapshot_id": point["snapshot_id"] if point else None,
    }
    if json_out:
        print_json(summary)
    else:
        _print_summary(summary, layout)


class _Say:
    """Progress lines for people; silent under --json (stdout is the JSON document)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, line: str) -> None:
        if not self.quiet:
            console.print(line, highlight=False)


def _stop(layout: setup.Layout, json_out: bool) -> None:
    stopped = setup.stop_all(layout)
    if json_out:
        print_json({"dir": str(layout.root), "stopped": stopped})
        return
    for name, pid in stopped.items():
        state = f"stopped (PID {pid})" if pid else "was not running"
        console.print(f"{name} {state}", highlight=False)
    console.print(f"data kept in {layout.root}; start again with: e3backup quickstart", end="")
    console.print(f" --dir {shlex.quote(str(layout.root))}", highlight=False)


def _ensure_server(layout: setup.Layout, listen: str, say: _Say) -> tuple[str, int]:
    pid = layout.server_running()
    if pid is not None and layout.server_url_file.exists():
        url = layout.server_url_file.read_text().strip()
        if setup.healthy(url):
            say(f"server already running at {url} (PID {pid})")
            return url, pid
    host, port = setup.parse_listen(listen)
    if pid is not None:  # ours but not answering: restart it
        setup.stop_all(layout)
    setup.require_port_free(host, port)
    pid = setup.start_server(layout, listen)
    url = layout.server_url_file.read_text().strip()
    say(f"server started at {url} (PID {pid}, log {layout.server_log})")
    return url, pid


def _ensure_agent(layout: setup.Layout, url: str, say: _Say) -> int:
    enrolled_now = setup.enroll_agent(layout, url)
    if enrolled_now:
        say(f"local agent enrolled (config {layout.agent_config})")
    pid = layout.agent_running()
    if pid is not None and not enrolled_now:
        say(f"agent already running (PID {pid})")
        return pid
    if pid is not None:  # still holding the config of an earlier enrollment
        setup.stop_agent(layout)
    pid = setup.start_agent(layout)
    say(f"agent started (PID {pid}, log {layout.agent_log})")
    return pid


def _agent_id(layout: setup.Layout) -> int:
    from e3backup.agent.config import load_config

    config = load_config(layout.agent_config)
    config.require_enrolled()
    assert config.agent_id is not None
    return config.agent_id


def _create_job(
    api: _Api, layout: setup.Layout, agent_id: int, size_bytes: int, say: _Say
) -> dict[str, Any]:
    if not layout.image.exists():
        say(f"making a {format_bytes(size_bytes)} VM-like sample disk at {layout.image}")
        make_sample_image(layout.image, size_bytes)
    body = {
        "name": JOB_NAME,
        "agent_id": agent_id,
        "engine": "disk_image",
        "disk_source_volume": str(layout.image),
        "dest_type": "local",
        "dest_local_path": str(layout.repository),
        # Generated here, sent once, kept only by the server (sealed with its key).
        "repository_password": secrets.token_urlsafe(24),
    }
    job: dict[str, Any] = api.post("/api/v1/jobs", body)
    say(
        f"job {job['id']}: back up {layout.image} into the encrypted repository {layout.repository}"
    )
    return job


class _Api:
    """The client API with the quickstart's API token."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        )

    def __enter__(self) -> _Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def get(self, path: str, **params: Any) -> Any:
        return self._answer(self.http.get(path, params=params))

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._answer(self.http.post(path, json=body or {}))

    @staticmethod
    def _answer(response: httpx.Response) -> Any:
        if response.status_code >= 300:
            detail = response.text[:500]
            raise QuickstartFailed(
                f"server answered {response.status_code} to {response.request.method} "
                f"{response.request.url.path}: {detail}"
            )
        return response.json()

    def wait_online(self, agent_id: int) -> None:
        deadline = time.monotonic() + ONLINE_TIMEOUT_S
        while not self.get(f"/api/v1/agents/{agent_id}")["online"]:
            if time.monotonic() > deadline:
                raise QuickstartFailed(
                    f"agent {agent_id} did not come online within {ONLINE_TIMEOUT_S:.0f} s"
                )
            time.sleep(0.3)

    def job_named(self, name: str) -> dict[str, Any] | None:
        jobs: list[dict[str, Any]] = self.get("/api/v1/jobs", limit=500)["items"]
        return next((j for j in jobs if j["name"] == name), None)

    def run_now(self, job_id: int) -> int:
        return int(self.post(f"/api/v1/jobs/{job_id}/runs")["id"])

    def point_of(self, job_id: int, run_id: int) -> dict[str, Any] | None:
        points: list[dict[str, Any]] = self.get("/api/v1/backup_points", job_id=job_id, limit=200)[
            "items"
        ]
        return next((p for p in points if p["run_id"] == run_id), None)


def _follow(api: _Api, run_id: int, quiet: bool) -> dict[str, Any]:
    """Poll the run and its events until it ends: a bar from its bytes, each event's server
    message printed as it arrives. Raises QuickstartFailed unless it succeeded."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(binary_units=True),
        console=console,
        disable=quiet,
    )
    task = bar.add_task(f"run {run_id}", total=None)
    cursor = 0
    deadline = time.monotonic() + RUN_TIMEOUT_S
    with bar:
        while True:
            run: dict[str, Any] = api.get(f"/api/v1/runs/{run_id}")
            for event in api.get(f"/api/v1/runs/{run_id}/events", after_event_id=cursor):
                cursor = max(cursor, int(event["id"]))
                if not quiet:
                    bar.console.print(f"  {event['level']:<5} {event['message']}", highlight=False)
            if run["bytes_total"]:
                bar.update(task, total=run["bytes_total"], completed=run["bytes_processed"] or 0)
            bar.update(task, description=f"run {run_id} {run['status']}")
            if run["status"] in TERMINAL:
                break
            if time.monotonic() > deadline:
                raise QuickstartFailed(f"run {run_id} did not finish within {RUN_TIMEOUT_S:.0f} s")
            time.sleep(0.5)
    if run["status"] not in SUCCEEDED:
        reason = run["error"] or "see the events above"
        raise QuickstartFailed(f"run {run_id} ended {run['status']}: {reason}")
    return run


def _print_summary(s: dict[str, Any], layout: setup.Layout) -> None:
    url = s["server_url"]
    token = f'"Authorization: Bearer $(cat {shlex.quote(s["api_token_file"])})"'
    dir_arg = shlex.quote(s["dir"])
    password = "printed above" if s["admin_password"] else f"in {s['password_file']}"
    lines = [
        "",
        f"[bold]open {url}[/] and sign in as {s['email']} (password {password})",
        f"[bold green]backup done[/]: run {s['run_id']} {s['run_status']}, "
        f"backup point {s['backup_point_id']} (snapshot {str(s['snapshot_id'])[:8]})",
        f"processes   server PID {s['server_pid']}, agent {s['agent_id']} online "
        f"(PID {s['agent_pid']})",
        f"API docs    {url}/api/docs",
        "API         curl -H " + token + f" {url}/api/v1/backup_points",
        f"stop        e3backup quickstart --stop --dir {dir_arg}   (keeps {layout.root})",
        f"again       e3backup quickstart --dir {dir_arg}   (another backup)",
    ]
    for line in lines:
        console.print(line, highlight=False)
