"""Ctrl-C during a backup's upload phase, and what a throttled backup reports.

Before the fix, SIGINT while packs waited for `--limit-upload` was ignored: the backup sat out
every upload (31 s more on a 64 MiB image at 2048 KiB/s), saved its snapshot and exited 0, and
its reported duration and speed left the upload out.
"""

from __future__ import annotations

import signal
from pathlib import Path

from cli_harness import Cli, MiB, sha256, write_random

from e3backup.storage.ratelimit import BURST_S, KIB

UPLOADING = b"waiting for the uploads to finish"  # the engine's log line (-v) once read


def _pack_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in (repo / "packs").rglob("*") if p.is_file())


def test_sigint_while_uploading_stops_promptly_and_commits_nothing(
    cli: Cli, tmp_path: Path
) -> None:
    cli.init()
    image = tmp_path / "disk.img"
    write_random(image, 64 * MiB, seed=41)  # incompressible: 64 MiB to upload, 32 s at the cap
    proc = cli.start("--limit-upload", "2048", "-v", "backup", "image", image, stderr=True)
    assert proc.stderr is not None
    log = b""
    for line in proc.stderr:  # no fixed sleep: wait until the engine says it is uploading
        log += line
        if UPLOADING in line:
            break
    assert UPLOADING in log, log.decode()
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    returncode = proc.wait(timeout=120)
    stderr = (log + rest).decode()

    assert returncode == 130, stderr
    assert "error: cancelled by signal SIGINT" in stderr and "Traceback" not in stderr, stderr
    # Stopped, not finished: most of the disk never reached the repository.
    assert _pack_bytes(cli.repo) < 64 * MiB // 2, stderr
    assert cli.snapshots() == []
    assert cli.ok("repo", "check", "--read-data").returncode == 0
    assert not list((cli.repo / "sessions").iterdir())

    snapshot = cli.backup(image)  # the next backup works (and reuses what was uploaded)
    cli.ok("restore", snapshot["id"], "--to", tmp_path / "restored.img")
    assert sha256(tmp_path / "restored.img") == sha256(image)


def test_reported_duration_and_speed_include_the_upload(cli: Cli, tmp_path: Path) -> None:
    cli.init()
    image = tmp_path / "disk.img"
    write_random(image, 4 * MiB, seed=42)
    limit_kibps = 1024
    result = cli.ok("--limit-upload", str(limit_kibps), "backup", "image", image, "--json")
    snapshot = result.json()
    uploaded = snapshot["disks"][0]["bytes_uploaded"]
    assert uploaded >= 4 * MiB
    # Derived from the data: the cap lets through at most one burst beyond its rate, so
    # sending `uploaded` bytes cannot have taken less than this.
    least_upload_s = uploaded / (limit_kibps * KIB) - BURST_S
    assert snapshot["duration_s"] >= least_upload_s, snapshot  # the summary's speed uses it
