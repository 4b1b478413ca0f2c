"""Enrollment and config: token and email+password enrollment through the CLI, the config file
(0600, TOML, unknown keys refused), plain http only to loopback, the server certificate pinned
on first contact and enforced afterwards, `agent status`."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from agent_harness import deployment, e3backup

from e3backup.agent.config import AgentConfig, load_config, save_config
from e3backup.agent.tls import fingerprint
from e3backup.core.errors import UsageError
from fixtures.real import run_tool
from fixtures.server_process import running_server


def test_config_round_trip_is_private(tmp_path: Path) -> None:
    config = AgentConfig(
        server_url="http://127.0.0.1:1",
        agent_id=3,
        agent_token="t0ken",
        path=tmp_path / "etc" / "agent.toml",
    )
    config.qemu.qmp_glob = "/run/vms/*.qmp"
    save_config(config)
    assert config.path.stat().st_mode & 0o777 == 0o600
    loaded = load_config(config.path)
    assert loaded == config and loaded.enrolled


def test_config_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('server_url = "http://127.0.0.1:1"\npoll_intervl_s = 3\n')
    with pytest.raises(UsageError, match="poll_intervl_s"):
        load_config(path)


def test_hyperv_section_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    section = "[hyperv]\nstate_dir = 'D:\\E3B\\hv'\npowershell = \"pwsh\"\njob_timeout_s = 600\n"
    path.write_text(section)
    loaded = load_config(path)
    assert (loaded.hyperv.state_dir, loaded.hyperv.powershell) == ("D:\\E3B\\hv", "pwsh")
    assert loaded.hyperv.job_timeout_s == 600.0
    save_config(loaded)
    assert load_config(path) == loaded  # round trip
    for bad, message in (
        ("[hyperv]\nstate_dri = 'x'\n", "unknown setting.*hyperv.state_dri"),
        ("[hyperv]\njob_timeout_s = 0\n", "job_timeout_s must be positive"),
        ("[hyperv]\njob_timeout_s = 'soon'\n", "bad agent config"),
        ("hyperv = 3\n", r"\[hyperv\] must be a table"),
    ):
        path.write_text(bad)
        with pytest.raises(UsageError, match=message):
            load_config(path)


def test_plain_http_to_a_remote_server_is_refused(tmp_path: Path) -> None:
    out = e3backup(
        "agent",
        "enroll",
        "--server",
        "http://backup.example.com",
        "--token",
        "x",
        "--config",
        tmp_path / "a.toml",
        check=False,
    )
    assert out.returncode == 2 and "refusing plain http" in out.stderr
    assert not (tmp_path / "a.toml").exists()


def test_enroll_by_email_and_password_then_status(tmp_path: Path) -> None:
    with deployment(tmp_path) as dep:
        password = tmp_path / "user-password"  # written by the deployment
        config = tmp_path / "agent.toml"
        bad = tmp_path / "bad"
        bad.write_text("nope\n")
        out = e3backup(
            "agent",
            "enroll",
            "--server",
            dep.server.url,
            "--email",
            "ops@example.com",
            "--password-file",
            bad,
            "--config",
            config,
            check=False,
        )
        assert out.returncode != 0 and not config.exists()
        out = e3backup(
            "agent",
            "enroll",
            "--server",
            dep.server.url,
            "--email",
            "ops@example.com",
            "--password-file",
            password,
            "--config",
            config,
        )
        assert "plain http to a loopback address" in out.stdout
        status = json.loads(e3backup("agent", "status", "--config", config, "--json").stdout)
        checks = {c["name"]: c for c in status["checks"]}
        assert status["ok"] and checks["server reachable"]["ok"]
        assert checks["last run"]["detail"] == "no run yet"
        assert "qemu-img present" in checks


def make_cert(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    run_tool(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        key,
        "-out",
        cert,
    )
    return cert, key


def test_https_certificate_is_pinned_at_enrollment_and_enforced(tmp_path: Path) -> None:
    first_cert, first_key = make_cert(tmp_path, "first")
    second_cert, second_key = make_cert(tmp_path, "second")
    with deployment(tmp_path) as dep:
        token = dep.enrollment_token()
        db_url = f"sqlite:///{dep.data_dir / 'e3backup-server.db'}"
        config = tmp_path / "agent.toml"
        tls = ("--tls-cert", str(first_cert), "--tls-key", str(first_key))
        with running_server(dep.data_dir, db_url, extra_args=tls, log_name="tls1.log") as server:
            e3backup(
                "agent", "enroll", "--server", server.url, "--token", token, "--config", config
            )
            pinned = tomllib.loads(config.read_text())["server_cert_sha256"]
            assert pinned == fingerprint(first_cert.read_text())
            assert e3backup("agent", "status", "--config", config).returncode == 0
            port = int(server.url.rsplit(":", 1)[1])
        other = ("--tls-cert", str(second_cert), "--tls-key", str(second_key))
        with running_server(dep.data_dir, db_url, port=port, extra_args=other, log_name="tls2.log"):
            out = e3backup("agent", "status", "--config", config, check=False)
            assert out.returncode == 1
            assert "CERTIFICATE_VERIFY_FAILED" in out.stdout, out.stdout
            # --fingerprint trusts only the certificate an admin vouched for, also for recover.
            first = fingerprint(first_cert.read_text())
            second = fingerprint(second_cert.read_text())
            again = tmp_path / "again.toml"
            out = e3backup(
                "agent", "enroll", "--server", server.url, "--token", token, "--config", again,
                "--fingerprint", first, check=False,
            )  # fmt: skip
            assert out.returncode == 2 and "refusing to connect" in out.stderr, out.stderr
            assert not again.exists()
            recover = ("agent", "recover", "--server", server.url, "--to", tmp_path / "disk.img")
            token_env = {"E3BACKUP_RECOVERY_TOKEN": "e3r_not-a-session"}
            out = e3backup(*recover, "--fingerprint", first, check=False, env=token_env)
            assert out.returncode == 2 and "refusing to connect" in out.stderr, out.stderr
            colons = ":".join(second[i : i + 2] for i in range(0, 64, 2)).upper()
            out = e3backup(*recover, "--fingerprint", colons, check=False, env=token_env)
            assert out.returncode == 41 and "invalid or expired" in out.stderr, out.stderr
            out = e3backup(*recover, check=False, env=token_env)  # first contact: pinned, shown
            assert out.returncode == 41 and f"SHA-256 {second}" in out.stderr, out.stderr
