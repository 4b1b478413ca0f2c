"""`e3backup agent enroll | run | status | recover`."""

from __future__ import annotations

import getpass
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from e3backup.agent.config import AgentConfig, load_config, save_config
from e3backup.cli.agent_recover_cmd import recover
from e3backup.cli.output import console, print_json
from e3backup.cli.server_opts import apply_server_conventions
from e3backup.core.errors import UsageError

app = typer.Typer(
    help="The agent: enroll with a control server and run its jobs.", no_args_is_help=True
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Agent config file (default: /etc/e3backup/agent.toml as "
        "root, ~/.config/e3backup/agent.toml otherwise).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
FingerprintOpt = Annotated[
    str | None,
    typer.Option(
        "--fingerprint",
        help="The server certificate's SHA-256 (from the server admin): trust only it, instead "
        "of whatever the server presents on first contact.",
    ),
]


def _password(password_file: Path | None) -> str:
    if password_file is not None:
        try:
            return password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read password file {password_file}: {exc}") from None
    if not sys.stdin.isatty():
        raise UsageError("a password is needed: pass --password-file or run in a terminal")
    return getpass.getpass("password: ")


@app.command("enroll")
def enroll(
    server: Annotated[str, typer.Option("--server", help="Control server URL (https://...).")],
    token: Annotated[
        str | None, typer.Option("--token", help="Enrollment token from the server admin.")
    ] = None,
    email: Annotated[
        str | None, typer.Option("--email", help="Enroll as this user (password prompted).")
    ] = None,
    password_file: Annotated[
        Path | None, typer.Option("--password-file", help="The user's password, from a file.")
    ] = None,
    fingerprint: FingerprintOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Enroll this host; with https the server certificate is pinned on first contact (or
    only the certificate with --fingerprint)."""
    from e3backup.agent.enrollment import enroll as do_enroll

    if (token is None) == (email is None):
        raise UsageError("give exactly one of --token or --email")
    current = load_config(config)
    password = _password(password_file) if email else None
    enrolled = do_enroll(
        current,
        server,
        token=token,
        email=email,
        password=password,
        expected_fingerprint=fingerprint,
    )
    save_config(enrolled)
    doc = {
        "agent_id": enrolled.agent_id,
        "server_url": enrolled.server_url,
        "config": str(enrolled.path),
        "server_cert_sha256": enrolled.server_cert_sha256,
    }
    if json_out:
        print_json(doc)
        return
    console.print(
        f"enrolled as agent {enrolled.agent_id} with {enrolled.server_url}; config {enrolled.path}",
        highlight=False,
    )
    if enrolled.server_cert_sha256:
        console.print(
            f"pinned server certificate SHA-256 {enrolled.server_cert_sha256}", highlight=False
        )
    else:
        console.print(
            "note: plain http to a loopback address; use https for remote servers", highlight=False
        )


@app.command("run")
def run(
    config: ConfigOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="DEBUG logs.")] = False,
) -> None:
    """Run the agent in the foreground; SIGTERM/SIGINT stop it cleanly (a running engine is
    cancelled and its end reported)."""
    from e3backup.agent.runner import Runner

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    runner = Runner(_enrolled(config))

    def handler(signum: int, _frame: object) -> None:
        runner.stop(f"stopping on {signal.Signals(signum).name}")

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    runner.run_forever()


@app.command("status")
def status(config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Enrolled? Server reachable? Last run? And the host checks (exit 1 when one fails)."""
    from e3backup.agent.doctor import run_checks

    checks = run_checks(load_config(config))
    failed = [c for c in checks if c.required and not c.ok]
    if json_out:
        print_json({"ok": not failed, "checks": [c.to_dict() for c in checks]})
    else:
        for c in checks:
            mark = "OK    " if c.ok else ("FAILED" if c.required else "WARN  ")
            console.print(f"{mark} {c.name}: {c.detail}", highlight=False)
    if failed:
        raise typer.Exit(1)


def _enrolled(path: Path | None) -> AgentConfig:
    config = load_config(path)
    config.require_enrolled()
    return config


app.command("recover")(recover)
apply_server_conventions(app)  # readable metavars, help text never read as markup
