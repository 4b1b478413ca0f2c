"""`e3backup repo init|info|check` (and `repo repair ...`, from cli/repair_cmd.py)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from e3backup.cli import repair_cmd
from e3backup.cli.context import CliContext
from e3backup.cli.output import console, print_json
from e3backup.core.errors import IntegrityError, UsageError
from e3backup.core.units import format_bytes, parse_size
from e3backup.repo import formats
from e3backup.repo.check import DataSubset, check_repository
from e3backup.repo.config import DEFAULT_CHUNK_SIZE, ENCRYPTION_SCHEMES, validate_chunk_size
from e3backup.repo.repository import Repository

app = typer.Typer(help="Create, describe and verify a repository.", no_args_is_help=True)
app.add_typer(repair_cmd.app, name="repair")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@app.command()
def init(
    ctx: typer.Context,
    encryption: Annotated[
        str, typer.Option(help=f"One of: {', '.join(ENCRYPTION_SCHEMES)}.")
    ] = "aes-256-gcm",
    chunk_size: Annotated[
        str,
        typer.Option(help="Fixed chunk size for disks: a power of two from 64K to 4M."),
    ] = f"{DEFAULT_CHUNK_SIZE // 1024}K",
    compression_level: Annotated[
        int, typer.Option(min=0, max=19, help="zstd level; 0 turns compression off.")
    ] = 3,
    json_out: JsonOption = False,
) -> None:
    """Create a new, empty repository."""
    cli: CliContext = ctx.obj
    try:
        size = validate_chunk_size(parse_size(chunk_size))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if encryption not in ENCRYPTION_SCHEMES:
        raise UsageError(
            f"unknown encryption {encryption!r} (choose {', '.join(ENCRYPTION_SCHEMES)})"
        )
    backend = cli.backend()
    password = cli.password(confirm=True) if encryption != "none" else None
    cli.create_bucket_if_missing()
    repo = Repository.init(backend, password, encryption, size, compression_level)
    if json_out:
        print_json({"repo_id": repo.config.repo_id, "location": backend.properties().location})
    else:
        console.print(
            f"created repository {repo.config.repo_id[:12]} at {backend.properties().location} "
            f"(encryption {encryption}, chunk size {format_bytes(size)})"
        )
        if encryption != "none":
            console.print("keep the password safe: without it the backups cannot be read")


@app.command()
def info(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """Describe the repository: format, encryption, size, snapshots."""
    cli: CliContext = ctx.obj
    repo = cli.open_repository()
    packs = list(repo.backend.list(formats.PACKS_PREFIX))
    doc: dict[str, Any] = {
        "location": repo.backend.properties().location,
        "repo_id": repo.config.repo_id,
        "format_version": repo.config.format_version,
        "encryption": repo.config.encryption,
        "chunk_size": repo.config.chunk_size,
        "compression_level": repo.config.compression_level,
        "snapshots": len(repo.snapshot_ids()),
        "chunks": len(repo.index),
        "packs": len(packs),
        "stored_bytes": sum(p.size_bytes for p in packs),
    }
    if json_out:
        print_json(doc)
        return
    for key, value in doc.items():
        shown = format_bytes(value) if key in ("chunk_size", "stored_bytes") else value
        console.print(f"{key:>18}: {shown}", highlight=False)


@app.command()
def check(
    ctx: typer.Context,
    read_data: Annotated[
        bool, typer.Option("--read-data", help="Also read, decrypt and verify every chunk.")
    ] = False,
    read_data_subset: Annotated[
        str | None,
        typer.Option(
            "--read-data-subset",
            metavar="n/t|N%",
            help="Read only part n of t of the packs (by pack id: t runs cover them all) "
            "or a random N%.",
        ),
    ] = None,
    record: Annotated[
        bool,
        typer.Option(help="Store the verdict per snapshot; backups never build on a damaged one."),
    ] = True,
    json_out: JsonOption = False,
) -> None:
    """Verify the repository's structure (and with --read-data, every stored byte).

    Exits non-zero and names the damaged snapshots when anything is wrong.
    """
    cli: CliContext = ctx.obj
    subset = DataSubset.parse(read_data_subset) if read_data_subset is not None else None
    repo = cli.open_repository()
    report = check_repository(repo, read_data=read_data, subset=subset, record=record)
    data_read = report.scope != "structure"
    if json_out:
        print_json(
            {
                "ok": report.ok,
                "scope": report.scope,
                "errors": report.errors,
                "notes": report.notes,
                "damaged_snapshots": sorted(report.damaged_snapshots),
                "snapshots_checked": report.snapshots_checked,
                "packs_checked": report.packs_checked,
                "packs_read": report.packs_read,
                "chunks_verified": report.chunks_verified,
                "records_written": report.records_written,
            }
        )
    else:
        for note in report.notes:
            console.print(f"note: {note}", highlight=False)
        for problem in report.errors:
            console.print(f"[red]error:[/] {problem}", highlight=False)
        console.print(
            f"checked {report.scope}: {report.snapshots_checked} snapshots, "
            f"{report.packs_checked} packs"
            + (
                f", {report.packs_read} read, {report.chunks_verified} chunks verified"
                if data_read
                else ""
            ),
            highlight=False,
        )
    if not report.ok:
        damaged = ", ".join(sorted(s[:12] for s in report.damaged_snapshots)) or "none"
        raise IntegrityError(
            f"check found {len(report.errors)} problem(s); damaged snapshots: {damaged}"
        )
