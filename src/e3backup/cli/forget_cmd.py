"""`e3backup forget`: forget named snapshots, or those a retention policy does not keep
(tombstone, then delete the manifest)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from e3backup.cli.context import CliContext
from e3backup.cli.output import console, print_json
from e3backup.cli.prune_cmd import UnsafeGraceOption, parse_grace, run_prune
from e3backup.core.errors import UsageError
from e3backup.repo.gc import PruneOptions
from e3backup.repo.repository import Repository
from e3backup.repo.retention import Decision, RetentionPolicy, apply_policy
from e3backup.repo.tombstones import forget_snapshot

NAMED = "named on the command line"


def forget(
    ctx: typer.Context,
    snapshot_ids: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="SNAPSHOT_ID",
            help="Forget these snapshots (id, unique id prefix or 'latest') instead of applying "
            "--keep-* rules; every id must resolve, or nothing is forgotten.",
            show_default=False,
        ),
    ] = None,
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
    grace: Annotated[
        str, typer.Option("--grace", metavar="DURATION", help="Grace period for --prune.")
    ] = "24h",
    unsafe_grace: UnsafeGraceOption = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Forget the named snapshots, or those a retention policy does not keep (per source; times
    in UTC). Their data goes with the next prune."""
    cli: CliContext = ctx.obj
    grace_s = parse_grace(grace, unsafe_grace) if and_prune else 0.0
    policy = RetentionPolicy(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly,
                             keep_yearly)  # fmt: skip
    if snapshot_ids and (not policy.is_empty() or source is not None):
        raise UsageError(
            "give snapshot ids or --keep-*/--source rules, not both "
            "(rules choose among all snapshots; ids name exactly the ones to forget)"
        )
    repo = cli.open_repository()
    if snapshot_ids:
        decisions = _named(repo, snapshot_ids)
    else:
        decisions = apply_policy(repo.list_snapshots(), policy, source)
    if not dry_run:
        for decision in decisions:
            if not decision.keep:
                forget_snapshot(repo, decision.snapshot, time.time)
    rows = [_row(d) for d in decisions]
    if json_out:
        print_json({"dry_run": dry_run, "snapshots": rows})
    else:
        _print_rows(rows, dry_run)
    if and_prune:
        run_prune(repo, PruneOptions(grace_s, dry_run=dry_run), json_out)


def _named(repo: Repository, refs: list[str]) -> list[Decision]:
    """Resolve every reference before anything is forgotten (a typo must not forget half)."""
    chosen: dict[str, Decision] = {}
    for ref in refs:
        snapshot = repo.find_snapshot(ref)
        chosen.setdefault(snapshot.id, Decision(snapshot, keep=False, reasons=[NAMED]))
    return sorted(chosen.values(), key=lambda d: (d.snapshot.time, d.snapshot.id))


def _row(decision: Decision) -> dict[str, Any]:
    return {
        "id": decision.snapshot.id,
        "time": decision.snapshot.time,
        "source": decision.snapshot.source_id,
        "keep": decision.keep,
        "reasons": decision.reasons,
    }


def _print_rows(rows: list[dict[str, Any]], dry_run: bool) -> None:
    for row in rows:
        action = "keep  " if row["keep"] else "forget"
        console.print(
            f"{action} {row['id'][:12]} {row['time'][:19]} {', '.join(row['reasons'])}",
            highlight=False,
        )
    forgotten = sum(1 for row in rows if not row["keep"])
    verb = "would forget" if dry_run else "forgot"
    console.print(f"{verb} {forgotten} of {len(rows)} snapshot(s)", highlight=False)
