"""`e3backup agent recover`: bare-metal recovery from a rescue environment."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from e3backup.cli.context import cancel_on_interrupt
from e3backup.cli.output import console, err_console, print_json, progress_bar
from e3backup.core.units import format_bytes
from e3backup.engines.restore_targets import RESTORE_FORMATS

RECOVER_HELP = """Restore a backup point onto a disk from a rescue environment, with only a
recovery session token (no enrollment, no repository password).

An operator starts a restore of the backup point (client API: POST /api/v1/restores) and
creates a recovery session for that run (POST /api/v1/runs/RUN/recovery_session); the token
it returns gives this command the repository and its credentials, for that one run. The run is
taken over from its agent (refused when the agent is already restoring it) and its progress
and events appear on the server as for any restore; a cancel on the server stops it.

--to FILE writes a new file under a temporary name, renamed only when complete and verified
(--overwrite replaces an existing regular file); --to /dev/sdX writes the device in place and
refuses one that is mounted or in use, or smaller than the disk.

https: the server certificate is pinned on first contact (printed), or give --fingerprint to
trust only that certificate. Plain http is allowed only to 127.0.0.1/localhost.

Exit codes: 0 restored; 2 bad usage or target; 40 server unreachable; 41 session token
invalid, expired or revoked, or the run ended or is being restored by its agent; 42 wrong disk
(not in the backup point, or several and no --disk); 43 target device too small; 10-20
repository or storage errors; 130 cancelled (Ctrl-C, SIGTERM or the server).
"""


def recover(
    server: Annotated[str, typer.Option("--server", help="Control server URL (https://...).")],
    session_token: Annotated[
        str,
        typer.Option(
            "--session-token",
            envvar="E3BACKUP_RECOVERY_TOKEN",
            help="Recovery session token (or $E3BACKUP_RECOVERY_TOKEN, kept out of `ps`).",
            show_default=False,
        ),
    ],
    to: Annotated[
        Path, typer.Option("--to", help="Target disk (/dev/sdX, written in place) or file.")
    ],
    disk: Annotated[
        str | None, typer.Option("--disk", help="Disk to restore when the point has several.")
    ] = None,
    image_format: Annotated[
        str, typer.Option("--format", help=f"Output format: {', '.join(RESTORE_FORMATS)}.")
    ] = "raw",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing regular file.")
    ] = False,
    fingerprint: Annotated[
        str | None,
        typer.Option("--fingerprint", help="Trust only the server certificate with this SHA-256."),
    ] = None,
    limit_download: Annotated[
        int | None,
        typer.Option("--limit-download", min=1, help="Cap repository downloads (KiB/s)."),
    ] = None,
    refresh_interval: Annotated[
        float,
        typer.Option(
            "--refresh-interval",
            envvar="E3BACKUP_RECOVERY_REFRESH_S",
            min=0.1,
            hidden=True,
            help="Seconds between session refreshes (tests).",
        ),
    ] = 300.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each step.")] = False,
) -> None:
    from e3backup.agent.recover import RecoverOptions
    from e3backup.agent.recover import recover as do_recover
    from e3backup.agent.recovery_client import RecoveryClient

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    options = RecoverOptions(
        target=to,
        disk=disk,
        image_format=image_format,
        overwrite=overwrite,
        download_limit_kibps=limit_download,
        refresh_interval_s=refresh_interval,
    )
    with RecoveryClient(server, session_token, fingerprint) as client:
        if client.fingerprint and fingerprint is None:
            err_console.print(
                f"trusting the server certificate SHA-256 {client.fingerprint} (first contact; "
                "compare it with the server's, or pass --fingerprint)",
                highlight=False,
            )
        with (
            cancel_on_interrupt() as cancel,
            progress_bar("recover", enabled=not json_out) as bar,
        ):
            result = do_recover(client, options, cancel, bar)
    if json_out:
        print_json(result.to_dict())
        return
    console.print(
        f"restored disk {result.disk} ({format_bytes(result.size_bytes)}) of backup point "
        f"{result.backup_point_id} to {result.target}; restore run {result.run_id}",
        highlight=False,
    )
    if not result.reported:
        err_console.print(
            "warning: the server could not be told that the restore finished", highlight=False
        )


# Paragraphs as single lines, so the help reflows to the terminal's width.
recover.__doc__ = "\n\n".join(" ".join(part.split()) for part in RECOVER_HELP.split("\n\n"))
