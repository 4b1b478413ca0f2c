"""`e3backup snapshots`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from e3backup.cli.context import CliContext
from e3backup.cli.output import console, print_json
from e3backup.core.units import format_bytes

if TYPE_CHECKING:
    from e3backup.repo.manifest import Snapshot


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


def snapshot_summary(snapshot: Snapshot) -> dict[str, Any]:
    """The JSON shape of a snapshot in CLI output."""
    return {
        "id": snapshot.id,
        "time": snapshot.time,
        "hostname": snapshot.hostname,
        "source": {
            "type": snapshot.source_type,
            "id": snapshot.source_id,
            "name": snapshot.source_name,
        },
        "type": snapshot.backup_type,
        "parent": snapshot.parent,
        "tags": snapshot.tags,
        "duration_s": round(snapshot.duration_s, 3),
        "warnings": list(snapshot.extra.get("warnings", [])),
        "disks": [
            {
                "name": d.name,
                "size_bytes": d.size_bytes,
                "read_plan": d.read_plan,
                "read_plan_reason": d.read_plan_reason,
                "bytes_read": d.bytes_read,
                "bytes_changed": d.bytes_changed,
                "bytes_uploaded": d.bytes_uploaded,
            }
            for d in snapshot.disks
        ],
    }
