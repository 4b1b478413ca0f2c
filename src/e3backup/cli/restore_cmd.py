"""`e3backup restore`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from e3backup.cli.context import CliContext, cancel_on_interrupt
from e3backup.cli.output import console, print_json, progress_bar
from e3backup.core.units import format_bytes
from e3backup.engines.image_backup import restore_disk
from e3backup.engines.restore_targets import RESTORE_FORMATS


def restore(
    ctx: typer.Context,
    snapshot: Annotated[str, typer.Argument(help="Snapshot id (or unique prefix), or 'latest'.")],
    to: Annotated[
        Path,
        typer.Option("--to", help="Target file (created) or block device (written in place)."),
    ],
    disk: Annotated[
        str | None, typer.Option("--disk", help="Disk to restore when the snapshot has several.")
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace an existing regular file (never a device, pipe, directory or symlink).",
        ),
    ] = False,
    image_format: Annotated[
        str,
        typer.Option("--format", help=f"Output format: {', '.join(RESTORE_FORMATS)}."),
    ] = "raw",
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Restore a disk of a snapshot as a sparse image file (or onto a device), verifying every
    chunk.

    The file appears under its name only when the restore is complete and verified.
    """
    cli: CliContext = ctx.obj
    repo = cli.open_repository()
    found = repo.find_snapshot(snapshot)
    with cancel_on_interrupt() as cancel, progress_bar("restore", enabled=not json_out) as bar:
        size = restore_disk(repo, found, disk, to, overwrite, bar, cancel, image_format)
    if json_out:
        print_json({"snapshot": found.id, "target": str(to), "size_bytes": size})
    else:
        console.print(
            f"restored {format_bytes(size)} from {found.id[:12]} to {to}", highlight=False
        )
