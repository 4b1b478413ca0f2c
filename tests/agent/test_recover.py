"""`e3backup agent recover` as a real process against a real server (SQLite) and a real local
repository: the backup point is made by a real agent through the client API; the agent is then
gone (the host died), a restore is started and a recovery session opened for it, and the rescue
environment restores with only the session token."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from agent_harness import (
    E3BACKUP,
    REPO_PASSWORD,
    Deployment,
    agent_id_of,
    deployment,
    running_agent,
    wait_for,
)
from sqlalchemy import update

from e3backup.server.db.engine import make_engine, make_session_factory, session_scope
from e3backup.server.db.models import RecoverySession
from fixtures.real import missing, require_tool, run_tool
from integration.cli_harness import sha256

MIB = 1024 * 1024
DISK_BYTES = 16 * MIB
SLOW = ("--limit-download", "2048")  # KiB/s: 16 MiB takes ~8 s, long enough to watch and cancel
WATCHABLE = ("--limit-download", "4096")  # ~4 s: two progress updates


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, int, Path]]:
    """(deployment, backup point id, source image): one disk_image backup through a real agent,
    which is stopped afterwards so restore commands wait for it in vain."""
    tmp = tmp_path_factory.mktemp("recover")
    image = tmp / "disk.img"
    image.write_bytes(random.Random(11).randbytes(DISK_BYTES))
    with deployment(tmp) as dep:
        config = dep.enroll()
        job = dep.create_job(
            agent_id_of(config),
            engine="disk_image",
            disk_source_volume=str(image),
            dest_type="local",
            dest_local_path=str(tmp / "repo"),
        )
        with running_agent(config):
            run = dep.wait_status(dep.run_now(job["id"]))
            assert run["status"] == "success", run
        (point,) = dep.points(job["id"])
        yield dep, int(point["id"]), image


def restore_session(dep: Deployment, point_id: int) -> tuple[int, int, str]:
    """(restore run id, its command id, session token) for a fresh restore of the point."""
    started = dep.post("/api/v1/restores", {"backup_point_id": point_id, "target_path": "/dev/sda"})
    run_id = int(started["restore_run_id"])
    token = dep.post(f"/api/v1/runs/{run_id}/recovery_session")["session_token"]
    return run_id, int(started["command_id"]), str(token)


def recover_argv(dep: Deployment, to: Path, *more: str, server: str | None = None) -> list[str]:
    url = server or dep.server.url
    return [str(E3BACKUP), "agent", "recover", "--server", url, "--to", str(to), *more]


def recover(
    dep: Deployment, token: str, to: Path, *more: str, server: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "E3BACKUP_RECOVERY_TOKEN": token}
    return subprocess.run(
        recover_argv(dep, to, *more, server=server),
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )


def start_recover(dep: Deployment, token: str, to: Path, *more: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        recover_argv(dep, to, "--session-token", token, *more),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_mid_restore(dep: Deployment, run_id: int) -> dict[str, Any]:
    """The server shows the rescue environment's live progress: running, part way."""

    def moving() -> dict[str, Any] | None:
        run = dep.run(run_id)
        assert run["status"] in ("queued", "starting", "running"), run
        done = run["bytes_processed"] or 0
        return run if run["status"] == "running" and 0 < done < DISK_BYTES else None

    return wait_for(moving, 120, f"restore run {run_id} to show progress")


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_recover_to_a_file_is_byte_identical_and_reported(
    world: tuple[Deployment, int, Path], tmp_path: Path
) -> None:
    dep, point_id, image = world
    run_id, command_id, token = restore_session(dep, point_id)
    target = tmp_path / "restored.img"
    proc = start_recover(dep, token, target, *WATCHABLE, "--json", "--refresh-interval", "0.5")
    try:
        live = wait_mid_restore(dep, run_id)
        assert live["bytes_total"] == DISK_BYTES and live["current_item"] == "disk.img"
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert doc["run_id"] == run_id and doc["size_bytes"] == DISK_BYTES and doc["reported"]
    assert doc["session_refreshes"] >= 1, "the session is refreshed while the restore runs"
    assert sha256(target) == sha256(image)
    assert leftovers(tmp_path) == ["restored.img"]

    run = dep.run(run_id)
    assert run["status"] == "success" and run["progress_pct"] == 100.0, run
    ids = dep.message_ids(run_id)
    for expected in ("REPO_CONNECTED", "RESTORE_STARTING", "HYPERV_RESTORE_DISK_PROGRESS"):
        assert expected in ids, ids
    assert ids[-1] == "RESTORE_COMPLETED", ids
    command = dep.get(f"/api/v1/commands/{command_id}")
    assert command["status"] == "expired", "the waiting agent command was withdrawn"
    for secret in (token, REPO_PASSWORD):
        assert secret not in out + err


@pytest.mark.parametrize("how", ["server", "sigterm"])
def test_cancel_stops_with_130_and_leaves_no_file(
    world: tuple[Deployment, int, Path], tmp_path: Path, how: str
) -> None:
    dep, point_id, _ = world
    run_id, _, token = restore_session(dep, point_id)
    target = tmp_path / "restored.img"
    proc = start_recover(dep, token, target, *SLOW)
    try:
        wait_mid_restore(dep, run_id)
        if how == "server":
            dep.post(f"/api/v1/runs/{run_id}/cancel")
        else:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "cancel" in err and len(err.strip().splitlines()) == 1, err
    assert leftovers(tmp_path) == [], "no partial file"
    run = dep.run(run_id)
    assert run["status"] == "cancelled", run
    ids = dep.message_ids(run_id)
    assert "CANCEL_REQUESTED" in ids and ids[-1] == "CANCELLED", ids


def expire(dep: Deployment, token: str) -> None:
    engine = make_engine(f"sqlite:///{dep.data_dir / 'e3backup-server.db'}")
    try:
        with session_scope(make_session_factory(engine)) as db:
            digest = hashlib.sha256(token.encode()).hexdigest()
            past = datetime.now(UTC) - timedelta(seconds=1)
            db.execute(
                update(RecoverySession)
                .where(RecoverySession.token_hash == digest)
                .values(expires_at=past)
            )
    finally:
        engine.dispose()


def test_bad_sessions_disks_and_servers_fail_with_one_line_and_their_code(
    world: tuple[Deployment, int, Path], tmp_path: Path
) -> None:
    dep, point_id, _ = world
    run_id, command_id, token = restore_session(dep, point_id)
    target = tmp_path / "restored.img"

    def fails(code: int, words: str, token: str = token, *more: str, **kw: Any) -> None:
        proc = recover(dep, token, target, *more, **kw)
        assert proc.returncode == code, (proc.returncode, proc.stderr)
        assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert token not in proc.stdout + proc.stderr
        assert leftovers(tmp_path) == []

    fails(41, "invalid or expired", "e3r_not-a-real-token")
    fails(42, "no disk 'sdb'", token, "--disk", "sdb")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    fails(40, "unreachable", token, server=f"http://127.0.0.1:{closed}")
    fails(2, "refusing plain http", token, server="http://backup.example.com:8420")
    # Mistakes found before the takeover leave the run for the agent, untouched.
    assert dep.run(run_id)["status"] == "queued"
    assert dep.get(f"/api/v1/commands/{command_id}")["status"] == "pending"
    expire(dep, token)
    fails(41, "expired")


@contextmanager
def loop_device(backing: Path, size: int) -> Iterator[Path]:
    losetup = require_tool("losetup", "mount")
    if os.geteuid() != 0:
        missing("loop devices need root")
    backing.write_bytes(b"\xaa" * size)
    device = Path(run_tool(losetup, "--find", "--show", backing).strip())
    try:
        yield device
    finally:
        run_tool(losetup, "--detach", device)


def test_recover_onto_a_block_device(world: tuple[Deployment, int, Path], tmp_path: Path) -> None:
    """In place on a loop device; refused while the device is in use or when it is too small."""
    dep, point_id, image = world
    run_id, _, token = restore_session(dep, point_id)
    with (
        loop_device(tmp_path / "small.bin", 2 * MIB) as small,
        loop_device(tmp_path / "disk.bin", DISK_BYTES + MIB) as device,
    ):
        proc = recover(dep, token, small)
        assert proc.returncode == 43 and "smaller than the disk" in proc.stderr, proc.stderr
        held = os.open(device, os.O_RDONLY | os.O_EXCL)  # as a mount holds it
        try:
            proc = recover(dep, token, device)
            assert proc.returncode == 2 and "in use" in proc.stderr, proc.stderr
        finally:
            os.close(held)
        assert dep.run(run_id)["status"] == "queued"
        proc = recover(dep, token, device)
        assert proc.returncode == 0, proc.stderr
        with open(device, "rb") as f:
            restored, rest = f.read(DISK_BYTES), f.read()
    assert hashlib.sha256(restored).hexdigest() == sha256(image)
    assert rest == b"\xaa" * MIB, "beyond the disk: left alone"
    assert dep.run(run_id)["status"] == "success"
