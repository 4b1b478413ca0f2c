"""Agent parts on their own: the outbox (order, persistence, bound), the run ledger, LVM command
construction and the snapshot fallback (device-mapper does not work on this machine, so the
snapshot really fails here), the filesystem browser, the policy."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from e3backup.agent import lvm
from e3backup.agent.browse import MAX_ENTRIES, browse
from e3backup.agent.client import AgentClient, BadResponse
from e3backup.agent.config import AgentConfig
from e3backup.agent.policy import parse_policy
from e3backup.agent.run_context import EngineTask, RunContext
from e3backup.agent.runner import Runner
from e3backup.agent.state import Outbox, RunLedger
from e3backup.core.cancel import CancelToken
from e3backup.core.errors import UsageError
from fixtures.real import missing, require_tool, run_tool


def test_outbox_keeps_order_across_restarts_and_drops_logs_first(tmp_path: Path) -> None:
    box = Outbox(tmp_path, max_items=4)
    box.add("events", 1, {"event_id": "1-1-000001"})
    box.add("logs", 1, [{"message": "a"}])
    box.add("events", 1, {"event_id": "1-1-000002"})
    box.add("update", 1, {"status": "success"})
    box.add("events", 2, {"event_id": "2-1-000001"})  # over the bound: the log batch goes
    again = Outbox(tmp_path, max_items=4)
    assert [i["kind"] for i in [again.peek()]] == ["events"]
    assert again.take_events(1, 10) == [{"event_id": "1-1-000001"}, {"event_id": "1-1-000002"}]
    assert again.pending() == 4 and again.has_final(1)
    again.drop(2)
    assert again.peek() == {"kind": "update", "run_id": 1, "data": {"status": "success"}}


def test_ledger_counts_attempts_and_remembers_the_end(tmp_path: Path) -> None:
    ledger = RunLedger(tmp_path)
    assert ledger.start(7, "backup") == 1
    assert ledger.start(7, "backup") == 2  # handed back after a restart: a fresh attempt
    ledger.finish(7, {"status": "success"})
    again = RunLedger(tmp_path)
    assert again.get(7) == {
        "attempt": 2,
        "kind": "backup",
        "finished": True,
        "final": {"status": "success"},
    }
    assert again.last_run == {"run_id": 7, "status": "success"}


LVS_JSON = """  {
      "report": [
          {
              "lv": [
                  {"vg_name":"vg0", "lv_name":"root", "lv_size":"21474836480"}
              ]
          }
      ]
  }
"""


def test_lvs_output_and_lvm_commands() -> None:
    lv = lvm.parse_lvs(LVS_JSON)
    assert lv == lvm.LogicalVolume("vg0", "root", 21474836480)
    assert lvm.lvcreate_args(lv) == [
        "-s",
        "-n",
        "root-e3backup-snap",
        "-L",
        "2147483648b",
        "vg0/root",
    ]
    assert lvm.lvremove_args(lv) == ["-f", "vg0/root-e3backup-snap"]
    small = lvm.LogicalVolume("vg0", "boot", 100 * 1024 * 1024)
    assert lvm.snapshot_size_bytes(small) == lvm.MIN_SNAPSHOT_BYTES
    assert lvm.parse_lvs("  WARNING: something\n") is None
    assert lvm.parse_lvs('{"report": [{"lv": []}]}') is None


@contextmanager
def volume_group(tmp_path: Path) -> Iterator[str]:
    """A real volume group on a loop device with one 8 MiB LV `data`, created metadata-only
    (`--driverloaded n`): this machine has no device-mapper, so it can never be activated."""
    require_tool("vgcreate", "lvm2")
    losetup = require_tool("losetup", "mount")
    if os.geteuid() != 0:
        missing("LVM on a loop device needs root")
    backing = tmp_path / "pv.img"
    with open(backing, "wb") as f:
        f.truncate(64 * 1024 * 1024)
    device = run_tool(losetup, "--find", "--show", backing).strip()
    vg = f"e3test{os.getpid()}"
    try:
        run_tool("pvcreate", device)
        run_tool("vgcreate", vg, device)
        run_tool("lvcreate", "--driverloaded", "n", "-an", "-Zn", "-L", "8m", "-n", "data", vg)
        yield vg
    finally:
        for argv in (["vgremove", "--driverloaded", "n", "-f", vg], ["pvremove", device]):
            subprocess.run(argv, capture_output=True, check=False, timeout=60)
        run_tool(losetup, "--detach", device)


def test_real_lvs_output_and_a_real_snapshot_failure(tmp_path: Path) -> None:
    """Against a real LV: our `lvs` query finds it (and nothing for a missing one), and the
    snapshot fails for real here (no device-mapper), so the live device is read with the
    fallback warning carrying lvcreate's own reason."""
    with volume_group(tmp_path) as vg:
        lv = lvm.query_lv(f"{vg}/data")
        assert lv == lvm.LogicalVolume(vg, "data", 8 * 1024 * 1024)
        assert lvm.query_lv(f"{vg}/missing") is None
        sent: list[tuple[str, dict[str, Any]]] = []
        ctx = RunContext(EngineTask("backup", 1, {}), sent.append, CancelToken())
        live = tmp_path / "live.img"
        live.write_bytes(b"\0" * 4096)
        with lvm.point_in_time(live, ctx, lv) as read_path:
            assert read_path == live
        assert lvm.query_lv(f"{vg}/data-e3backup-snap") is None, "no snapshot left behind"
    reason = sent[-1][1]["params"]["reason"]
    assert sent[-1][1]["message_id"] == "DISK_IMAGE_READ_PLAN_FALLBACK"
    assert "device-mapper" in reason and f"{vg}/data" in reason, reason


def test_lvm_snapshot_failure_falls_back_to_the_live_device(tmp_path: Path) -> None:
    """lvcreate cannot work here (no device-mapper / no LVM tools): the live path is read."""
    sent: list[tuple[str, dict[str, Any]]] = []
    ctx = RunContext(EngineTask("backup", 1, {}), sent.append, CancelToken())
    device = tmp_path / "disk.img"
    device.write_bytes(b"\0" * 4096)
    lv = lvm.LogicalVolume("vg-e3test", "data", 1 << 30)
    with lvm.point_in_time(device, ctx, lv) as read_path:
        assert read_path == device
    kinds = [k for k, _ in sent]
    assert kinds == ["cleanup", "cleanup_done", "event"]
    event = sent[2][1]
    assert event["message_id"] == "DISK_IMAGE_READ_PLAN_FALLBACK"
    assert event["level"] == "warning" and "vg-e3test/data" in event["params"]["reason"]
    assert sent[0][1]["argv"] == ["lvremove", "-f", "vg-e3test/data-e3backup-snap"]


def test_browse_lists_folders_first_and_guards_paths(tmp_path: Path) -> None:
    (tmp_path / "b-dir").mkdir()
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "c-dir").mkdir()
    listing = browse(str(tmp_path))
    assert [e["name"] for e in listing["entries"]] == ["b-dir", "c-dir", "a-file"]
    assert listing["entries"][2]["size_bytes"] == 1
    assert browse(str(tmp_path / ".." / "x"))["error"]
    assert browse("relative/path")["error"]
    assert "cannot list" in browse(str(tmp_path / "missing"))["error"]
    assert browse("")["entries"][0]["path"] == "/"


def test_browse_caps_the_listing(tmp_path: Path) -> None:
    for n in range(MAX_ENTRIES + 5):
        os.mkdir(tmp_path / f"d{n:05d}")
    listing = browse(str(tmp_path))
    assert len(listing["entries"]) == MAX_ENTRIES and listing["truncated"]


def test_policy_from_the_job() -> None:
    policy = parse_policy(
        {
            "compression": "none",
            "bandwidth_limit_kbps": 512,
            "parallelism": 2,
            "enable_change_tracking": False,
        }
    )
    assert policy.describe() == {
        "compression": "none",
        "bandwidth_limit_kbps": 512,
        "parallelism": 2,
        "consistency_level": "application",
        "change_tracking": False,
    }
    assert parse_policy({"compression": "zstd-19"}).compression_level == 19
    assert parse_policy({}, {"consistency_level": "crash"}).consistency_level == "crash"
    with pytest.raises(UsageError, match="unsupported compression"):
        parse_policy({"compression": "lz4"})


_BAD_COMMANDS = b'[{"type": 5}, {"command_id": 9, "type": "nas_mount"}]'


class _BadServer(BaseHTTPRequestHandler):
    """Answers like a broken server: half a run, commands with one bad entry."""

    combined_poll = True  # False: a server from before the combined poll (404)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answers = {
            "/api/agent/next_run": b'{"run_type": "backup"}',
            "/api/agent/poll_commands": (
                b'{"commands": ' + _BAD_COMMANDS + b', "cancel_requested": false}'
            ),
            "/api/agent/poll": (
                b'{"run": {"run_type": "backup"}, "commands": ' + _BAD_COMMANDS + b"}"
            ),
        }
        if self.path == "/api/agent/poll" and not self.combined_poll:
            self.send_error(404)
            return
        body = answers.get(self.path, b'{"status": "success"}')
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _OldServer(_BadServer):
    combined_poll = False


@pytest.mark.parametrize("handler", [_BadServer, _OldServer], ids=["combined", "old-server"])
def test_a_malformed_answer_is_logged_and_skipped(
    tmp_path: Path, handler: type[_BadServer]
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = AgentConfig(
            server_url=f"http://127.0.0.1:{server.server_address[1]}",
            agent_id=1,
            agent_token="t",
            poll_interval_s=1.0,
            path=tmp_path / "agent.toml",
        )
        client = AgentClient(config)
        with pytest.raises(BadResponse, match="next_run: malformed answer"):
            client.next_run()
        commands, cancel = client.poll_commands()
        assert [c.command_id for c in commands] == [9] and not cancel
        runner = Runner(config, client)
        assert runner.poll_once() <= 1.2  # did not raise, did not back off
        assert runner.backoff.failures == 0
        assert runner.busy  # the good command was queued for the command thread
        assert runner._combined_poll is handler.combined_poll
    finally:
        server.shutdown()
        server.server_close()


def test_test_destination_reports_the_diagnosis(tmp_path: Path) -> None:
    """The test_destination command's engine, in a real engine process."""
    from agent_harness import e3backup

    from e3backup.agent.commands import run_without_run

    repo = tmp_path / "repo"
    e3backup("--repo", repo, "repo", "init", env={"E3BACKUP_PASSWORD": "right-password"})
    local = {"dest_type": "local", "dest_local_path": str(repo)}

    def probe(job: dict[str, Any]) -> dict[str, Any]:
        return run_without_run(EngineTask("test_destination", None, job))

    ok = probe({**local, "repository_password": "right-password"})
    assert ok["status"] == "success" and ok["result"]["authenticated"]
    wrong = probe({**local, "repository_password": "wrong-password"})
    assert wrong["status"] == "failed" and "wrong password" in wrong["error"]
    empty = probe(
        {"dest_type": "local", "dest_local_path": str(tmp_path / "new"), "repository_password": "x"}
    )
    assert empty["status"] == "success" and empty["result"]["repository"] is False
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    s3 = probe({"dest_type": "s3", "dest_bucket": "b", "dest_endpoint": f"127.0.0.1:{port}"})
    assert s3["status"] == "failed"
    assert s3["result"]["preflight"]["diagnosis"] == "STORAGE_TCP_REFUSED"
