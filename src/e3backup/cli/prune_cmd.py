"""`e3backup prune`: delete and repack data no snapshot needs (lock-free; see repo/gc.py)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from e3backup.cli.context import CliContext
from e3backup.cli.output import console, print_json
from e3backup.core.errors import UsageError
from e3backup.core.units import format_bytes
from e3backup.repo.gc import (
    DEFAULT_REPACK_RATIO,
    PruneOptions,
    PruneReport,
    check_grace,
    prune,
)
from e3backup.repo.repository import Repository

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '24h', '7d' -> seconds."""
    text = text.strip().lower()
    unit = _UNITS.get(text[-1:]) if text else None
    number = text[:-1] if unit else text
    try:
        value = float(number) * (unit or 1)
    except ValueError:
        raise UsageError(f"{text!r} is not a duration (examples: 30s, 15m, 24h, 7d)") from None
    if value < 0:
        raise UsageError("a duration cannot be negative")
    return value


def parse_grace(text: str, unsafe: bool = False) -> float:
    """A `--grace` value, refused below the safe minimum unless `--unsafe-grace` was given."""
    seconds = parse_duration(text)
    check_grace(seconds, unsafe)
    return seconds


UnsafeGraceOption = Annotated[
    bool,
    typer.Option(
        "--unsafe-grace",
        help="Accept a grace period below the safe minimum (2 session heartbeats + 60s): only "
        "when nothing else uses the repository.",
    ),
]


def run_prune(repo: Repository, options: PruneOptions, json_out: bool) -> PruneReport:
    report = prune(repo, options)
    if json_out:
        print_json(asdict(report) | {"dry_run": options.dry_run})
        return report
    verb = "would unindex" if options.dry_run else "unindexed"
    console.print(
        f"{report.snapshots} snapshot(s), {report.packs_total} pack(s); {verb} "
        f"{report.packs_unindexed} pack(s) ({report.packs_repacked} repacked, "
        f"{report.blobs_copied} blob(s) copied); deleted {report.packs_deleted} pack(s) "
        f"({format_bytes(report.bytes_deleted)}); {report.packs_waiting} waiting for the grace "
        "period or running backups",
        highlight=False,
    )
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)
    return report


def prune_command(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report, change nothing.")] = False,
    grace: Annotated[
        str,
        typer.Option(
            "--grace",
            help="Grace period: packs leave storage this long after they left the index, and "
            "a backup without a heartbeat for this long counts as dead (e.g. 24h, 30m; at least "
            "2 session heartbeats + 60s, 3m by default).",
        ),
    ] = "24h",
    unsafe_grace: UnsafeGraceOption = False,
    max_repack_ratio: Annotated[
        float,
        typer.Option(
            "--max-repack-ratio",
            min=0.0,
            max=1.0,
            help="Repack packs whose live share of bytes is at most this (0 disables).",
        ),
    ] = DEFAULT_REPACK_RATIO,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Delete unreferenced data and repack mostly-garbage packs, while backups keep running."""
    cli: CliContext = ctx.obj
    grace_s = parse_grace(grace, unsafe_grace)
    repo = cli.open_repository()
    options = PruneOptions(grace_s, max_repack_ratio, dry_run)
    run_prune(repo, options, json_out)
