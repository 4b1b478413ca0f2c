"""`e3backup snapshots`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from e3backup.cli.backup_cmd import snapshot_summary
from e3backup.cli.context import CliContext
from e3backup.cli.output import console, print_json
from e3backup.core.units import format_bytes


def snapshots(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List snapshots, oldest first."""
    cli: CliContext = ctx.obj
    repo = cli.open_repository()
    found = repo.list_snapshots()
    if json_out:
        print_json([snapshot_summary(s) for s in found])
        return
    table = Table("id", "time", "source", "type", "disks", "tags")
    for s in found:
        disks = ", ".join(f"{d.name} ({format_bytes(d.size_bytes)})" for d in s.disks)
        cells = (s.id[:12], s.time[:19], s.source_name, s.backup_type, disks, ",".join(s.tags))
        table.add_row(*(escape(cell) for cell in cells))  # names and tags are text, not markup
    console.print(table)
    console.print(f"{len(found)} snapshot(s)")
