"""`e3backup repo repair index|snapshots`: bring a damaged repository back to where prune runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Annotated

import typer

from e3backup.cli.context import CliContext
from e3backup.cli.output import console, print_json, progress_bar
from e3backup.engines.progress import Progress
from e3backup.repo.repair import repair_index, repair_snapshots

app = typer.Typer(
    help="Repair a damaged repository (rebuild the index, deal with broken snapshots).",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Report, change nothing.")]


@contextmanager
def _progress(label: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    with progress_bar(label, enabled) as bar:
        if bar is None:
            yield None
            return

        def update(done: int, total: int) -> None:
            bar(Progress(total, done, 0, done, 0.0, None, label))

        yield update


@app.command("index")
def index_command(
    ctx: typer.Context, dry_run: DryRunOption = False, json_out: JsonOption = False
) -> None:
    """Rebuild the index from the packs' trailers (as restic's `repair index`).

    New index objects cover every blob of every readable pack; then the old ones are deleted.

    Unreadable packs are reported and left alone.
    """
    cli: CliContext = ctx.obj
    repo = cli.open_repository()
    with _progress("reading pack trailers", not json_out) as progress:
        report = repair_index(repo, dry_run, progress)
    if json_out:
        print_json(asdict(report) | {"dry_run": dry_run})
        return
    for pack_id, why in sorted(report.unreadable_packs.items()):
        console.print(f"[yellow]warning:[/] pack {pack_id[:16]} left alone: {why}", highlight=False)
    verb = "would write" if dry_run else "wrote"
    console.print(
        f"{report.packs_indexed} of {report.packs} pack(s) read, {report.blobs_indexed} blob(s); "
        f"{verb} {report.index_objects_written} index object(s) in place of "
        f"{report.old_index_objects} ({report.unreadable_index_objects} unreadable); dropped "
        f"{report.entries_of_missing_packs} entries of missing packs",
        highlight=False,
    )


@app.command("snapshots")
def snapshots_command(
    ctx: typer.Context,
    forget: Annotated[
        bool,
        typer.Option(
            "--forget",
            help="Forget the damaged snapshots (through tombstones), so prune can run again.",
        ),
    ] = False,
    dry_run: DryRunOption = False,
    json_out: JsonOption = False,
) -> None:
    """Find snapshots whose chunks are in no index or in missing packs.

    Each is listed and recorded as damaged: backups never build on it.

    --forget forgets them (through tombstones), so prune can run again.

    Run `repo repair index` first if index objects were lost.
    """
    cli: CliContext = ctx.obj
    repo = cli.open_repository()
    with _progress("reading snapshot indexes", not json_out) as progress:
        report = repair_snapshots(repo, forget, dry_run, progress)
    if json_out:
        print_json(asdict(report) | {"forget": forget})
        return
    for damage in report.damaged:
        console.print(
            f"damaged {damage.snapshot_id[:12]} {damage.time[:19]} {damage.source_name}: "
            + "; ".join(damage.problems[:3]),
            highlight=False,
        )
    count = len(report.damaged)
    summary = f"{count} of {report.snapshots_checked} snapshot(s) damaged"
    if count and dry_run:
        action = "forget" if forget else "record"
        summary += f"; nothing changed (--dry-run): would {action} them"
    elif count and forget:
        summary += f"; forgot {report.forgotten} (their tombstones no longer hold up prune)"
    elif count:
        summary += (
            f"; recorded {report.recorded} as damaged (backups do not build on them); "
            "'repo repair snapshots --forget' forgets them, so prune can run"
        )
    console.print(summary, highlight=False)
