"""`e3backup backup image`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from e3backup.cli import vm_cmd
from e3backup.cli.context import CliContext, cancel_on_interrupt
from e3backup.cli.output import console, print_json, progress_bar
from e3backup.cli.snapshots_cmd import snapshot_summary
from e3backup.core.units import format_bytes
from e3backup.engines.image_backup import ImageBackupOptions, backup_image
from e3backup.engines.read_plan import load_changed_extents
from e3backup.sources.detect import FORMATS, open_disk

app = typer.Typer(help="Back up disks and images.", no_args_is_help=True)


@app.command("image")
def image(
    ctx: typer.Context,
    path: Annotated[
        Path,
        typer.Argument(
            help="Disk to back up: a block device or an image file (raw, VHDX, qcow2, VMDK, "
            "VDI, VHD; the format is detected from the content unless --format states it)."
        ),
    ],
    image_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help=f"The image's format: {', '.join(FORMATS)}. A detected format never follows "
            "other files the image names; use --format raw for a raw disk whatever it holds.",
        ),
    ] = None,
    follow_backing: Annotated[
        bool,
        typer.Option(
            "--follow-backing",
            help="Read through the files the image names (backing file, parent disk, external "
            "data file, VMDK extents); needs --format.",
        ),
    ] = False,
    changed_extents: Annotated[
        Path | None,
        typer.Option(
            "--changed-extents",
            help="JSON list of [offset, length] ranges changed since the previous backup of this "
            "path (from a change tracker). Only those are read; the rest is taken from the "
            "parent snapshot. Without a usable parent the whole image is read.",
        ),
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Tag the snapshot (repeatable).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Back up an image file or block device, reading only allocated data.

    Backups of the same path form one source: the latest snapshot of the path is the parent
    of the next backup, and unchanged data is never stored twice.
    """
    cli: CliContext = ctx.obj
    extents = load_changed_extents(changed_extents) if changed_extents else None
    repo = cli.open_repository()
    options = ImageBackupOptions(tags=tuple(tag or ()), changed_extents=extents)
    with (
        open_disk(path, image_format, follow_backing) as reader,
        cancel_on_interrupt() as cancel,
        progress_bar(f"backup {path.name}", enabled=not json_out) as progress,
    ):
        snapshot = backup_image(repo, path, reader, options, progress, cancel)
    summary = snapshot_summary(snapshot)
    if json_out:
        print_json(summary)
        return
    disk = snapshot.disks[0]
    speed = disk.size_bytes / max(snapshot.duration_s, 1e-6)
    console.print(
        f"snapshot {snapshot.id[:12]} saved ({snapshot.backup_type}"
        + (f", {disk.read_plan_reason}" if disk.read_plan_reason else "")
        + ")\n"
        f"  disk {disk.name}: {format_bytes(disk.size_bytes)}, "
        f"read {format_bytes(disk.bytes_read)}, changed {format_bytes(disk.bytes_changed)}, "
        f"uploaded {format_bytes(disk.bytes_uploaded)}\n"
        f"  took {snapshot.duration_s:.1f} s ({format_bytes(speed)}/s)",
        highlight=False,
    )


# `backup vm` lives with the other VM commands.
app.command("vm")(vm_cmd.backup_vm)
