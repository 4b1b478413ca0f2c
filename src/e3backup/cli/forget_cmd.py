"""`e3backup forget`: apply a retention policy (tombstone, then delete the manifest)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from e3backup.cli.context import CliContext
from e3backup.cli.output import console, print_json
from e3backup.cli.prune_cmd import parse_duration, run_prune
from e3backup.repo.gc import PruneOptions
from e3backup.repo.retention import RetentionPolicy, apply_policy
from e3backup.repo.tombstones import forget_snapshot


def forget(
    ctx: typer.Context,
    keep_last: Annotated[int, typer.Option("--keep-last", help="Keep the N newest.")] = 0,
    keep_hourly: Annotated[
        int, typer.Option("--keep-hourly", help="Newest per hour, N hours.")
    ] = 0,
    keep_daily: Annotated[int, typer.Option("--keep-daily", help="Newest per day, N days.")] = 0,
    keep_weekly: Annotated[int, typer.Option("--keep-weekly", help="Newest per ISO week.")] = 0,
    keep_monthly: Annotated[int, typer.Option("--keep-monthly", help="Newest per month.")] = 0,
    keep_yearly: Annotated[int, typer.Option("--keep-yearly", help="Newest per year.")] = 0,
    source: Annotated[
        str | None, typer.Option("--source", help="Only this source id (default: every source).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, forget nothing.")] = False,
    and_prune: Annotated[bool, typer.Option("--prune", help="Run prune afterwards.")] = False,
    grace: Annotated[str, typer.Option("--grace", help="Grace period for --prune.")] = "24h",
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Forget snapshots a retention policy does not keep (per source; times in UTC)."""
    cli: CliContext = ctx.obj
    repo = cli.open_repository()
    policy = RetentionPolicy(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly,
                             keep_yearly)  # fmt: skip
    decisions = apply_policy(repo.list_snapshots(), policy, source)
    if not dry_run:
        for decision in decisions:
            if not decision.keep:
                forget_snapshot(repo, decision.snapshot, time.time)
    rows: list[dict[str, Any]] = [
        {
            "id": d.snapshot.id,
            "time": d.snapshot.time,
            "source": d.snapshot.source_id,
            "keep": d.keep,
            "reasons": d.reasons,
        }
        for d in decisions
    ]
    forgotten = sum(1 for d in decisions if not d.keep)
    if json_out and not and_prune:
        print_json({"dry_run": dry_run, "snapshots": rows})
    elif not json_out:
        for row in rows:
            action = "keep  " if row["keep"] else "forget"
            console.print(
                f"{action} {row['id'][:12]} {row['time'][:19]} {', '.join(row['reasons'])}",
                highlight=False,
            )
        verb = "would forget" if dry_run else "forgot"
        console.print(f"{verb} {forgotten} of {len(rows)} snapshot(s)", highlight=False)
    if and_prune:
        if json_out:
            print_json({"dry_run": dry_run, "snapshots": rows})
        run_prune(repo, PruneOptions(parse_duration(grace), dry_run=dry_run), json_out)
