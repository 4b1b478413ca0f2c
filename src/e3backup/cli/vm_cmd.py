"""`e3backup vm list` and `e3backup backup vm`: VMs on a hypervisor (QEMU/KVM for now)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from e3backup.cli.context import CliContext, cancel_on_interrupt
from e3backup.cli.output import console, err_console, print_json, progress_bar
from e3backup.core.errors import UsageError
from e3backup.core.units import format_bytes
from e3backup.engines.unchanged_sample import DEFAULT_SAMPLE_CHUNKS
from e3backup.engines.vm_backup import VmBackupJob, VmBackupOptions
from e3backup.engines.vm_result import VmEvent
from e3backup.sources.hypervisors.base import ConsistencyLevel
from e3backup.sources.hypervisors.qemu.provider import QemuEndpoint, QemuProvider

app = typer.Typer(help="Virtual machines on a hypervisor.", no_args_is_help=True)

EXIT_BY_STATUS = {"success": 0, "partial_success": 3, "failed": 1, "cancelled": 130}

HypervisorOpt = Annotated[
    str, typer.Option("--hypervisor", help="Hypervisor type; only 'qemu' on this platform.")
]
QmpOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--qmp",
        help="QMP unix socket of a VM (repeat for several VMs; QEMU: -qmp unix:PATH,server=on).",
    ),
]
QgaOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--qga",
        help="Guest-agent unix socket, paired with the --qmp at the same position.",
    ),
]
VmOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--vm",
        help="A VM as 'qmp=PATH[,qga=PATH]' (repeatable; an alternative to --qmp/--qga pairs).",
    ),
]


def endpoints(
    hypervisor: str, qmp: list[Path] | None, qga: list[Path] | None, vm: list[str] | None
) -> list[QemuEndpoint]:
    if hypervisor != "qemu":
        raise UsageError(f"hypervisor {hypervisor!r} is not supported here (supported: qemu)")
    qmp, qga = list(qmp or []), list(qga or [])
    if len(qga) > len(qmp):
        raise UsageError("more --qga than --qmp sockets: each --qga pairs with one --qmp")
    out = [QemuEndpoint(q, qga[i] if i < len(qga) else None) for i, q in enumerate(qmp)]
    for spec in vm or []:
        fields = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
        if "qmp" not in fields or set(fields) - {"qmp", "qga"}:
            raise UsageError(f"--vm {spec!r}: expected 'qmp=PATH[,qga=PATH]'")
        out.append(
            QemuEndpoint(Path(fields["qmp"]), Path(fields["qga"]) if "qga" in fields else None)
        )
    if not out:
        raise UsageError("name at least one VM with --qmp SOCKET or --vm qmp=SOCKET")
    return out


@app.command("list")
def list_vms(
    hypervisor: HypervisorOpt = "qemu",
    qmp: QmpOpt = None,
    qga: QgaOpt = None,
    vm: VmOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the VMs behind the given sockets: id, name, state, machine type, disks."""
    provider = QemuProvider(endpoints(hypervisor, qmp, qga, vm))
    vms = provider.list_vms()
    if json_out:
        print_json([v.to_dict() for v in vms])
        return
    for info in vms:
        tracking = "change tracking" if info.change_tracking else "no change tracking"
        console.print(
            f"{info.id}  {info.name}  {info.state}  {info.machine_type}  ({tracking})",
            highlight=False,
        )
        for d in info.disks:
            console.print(
                f"    {d.name}: {d.format} {format_bytes(d.size_bytes)}  {d.path}", highlight=False
            )


def backup_vm(
    ctx: typer.Context,
    hypervisor: HypervisorOpt = "qemu",
    qmp: QmpOpt = None,
    qga: QgaOpt = None,
    vm: VmOpt = None,
    consistency: Annotated[
        str,
        typer.Option(
            "--consistency",
            help="application: freeze the guest through its agent (falls back to crash with "
            "warning QUIESCE_FAILED when it cannot); crash: never freeze.",
        ),
    ] = "application",
    verify_sample: Annotated[
        int,
        typer.Option(
            "--verify-sample",
            min=0,
            help="Unchanged chunks re-read per incremental disk to check change tracking.",
        ),
    ] = DEFAULT_SAMPLE_CHUNKS,
    scratch_dir: Annotated[
        Path | None,
        typer.Option("--scratch-dir", help="Where QEMU keeps fleecing data during the backup."),
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag the snapshots.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the job result as JSON.")] = False,
) -> None:
    """Back up running VMs: every disk plus the VM configuration, one snapshot per VM.

    Name each VM by its QMP socket: repeat '--qmp A.sock --qga A-ga.sock --qmp B.sock' (the
    n-th --qga belongs to the n-th --qmp) or use '--vm qmp=A.sock,qga=A-ga.sock' per VM. The
    first backup of a disk is Full; later ones read only blocks changed since (persistent dirty
    bitmaps), unless change tracking cannot be trusted (the reason is reported). A failed VM
    does not stop the others. Exit status: 0 success, 3 partial_success, 1 failed, 130
    cancelled.
    """
    cli: CliContext = ctx.obj
    levels = {"application": ConsistencyLevel.APPLICATION, "crash": ConsistencyLevel.CRASH}
    if consistency not in levels:
        raise UsageError("--consistency must be 'application' or 'crash'")
    eps = endpoints(hypervisor, qmp, qga, vm)
    provider = QemuProvider(eps, scratch_dir)
    repo = cli.open_repository()
    options = VmBackupOptions(levels[consistency], verify_sample, tuple(tag or ()))

    def on_event(event: VmEvent) -> None:
        if event.level != "info" and not json_out:
            err_console.print(f"{event.message_id}: {event.params}", highlight=False)

    with (
        cancel_on_interrupt() as cancel,
        progress_bar("backup VMs", enabled=not json_out) as progress,
    ):
        job = VmBackupJob(repo, provider, options, on_event, progress, cancel)
        result = job.run([str(e.qmp) for e in eps])
    if json_out:
        print_json(result.to_dict())
    else:
        for r in result.vm_results:
            line = f"{r.vm_name}: {r.status}"
            if r.snapshot_id:
                line += (
                    f", snapshot {r.snapshot_id[:12]} ({r.backup_type}, "
                    f"{r.consistency_level}), read {format_bytes(r.bytes_read)} of "
                    f"{format_bytes(r.total_bytes)}"
                )
            if r.error:
                line += f": {r.error}"
            console.print(line, highlight=False)
            for name, disk in r.disk_manifests.items():
                reason = f" ({disk['read_plan_reason']})" if disk["read_plan_reason"] else ""
                console.print(f"    {name}: {disk['read_plan']}{reason}", highlight=False)
        console.print(f"job {result.status}", highlight=False)
    raise typer.Exit(EXIT_BY_STATUS[result.status])
