"""The QEMU provider: one QMP socket (and optionally one guest-agent socket) per VM.

Point in time = blockdev-backup sync=none into a scratch qcow2 whose backing is the live disk
(fleecing): QEMU copies old data there before the guest overwrites it, so the scratch node reads
as the disk was at the transaction. The same transaction rotates the dirty bitmaps. QEMU's own
NBD server exports the scratch nodes on a unix socket, with the token's bitmap as
`qemu:dirty-bitmap:<token>`. The guest is frozen only around the transaction.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e3backup.core.errors import E3Error
from e3backup.exec.command import Command
from e3backup.sources.hypervisors.base import (
    WARNING_QUIESCE_FAILED,
    ConsistencyLevel,
    DiskView,
    HypervisorError,
    VmDisk,
    VmInfo,
    VmNotFound,
)
from e3backup.sources.hypervisors.qemu import bitmaps
from e3backup.sources.hypervisors.qemu.guardian import Guardian
from e3backup.sources.hypervisors.qemu.guest_agent import GuestAgent, GuestAgentError
from e3backup.sources.hypervisors.qemu.qmp import QmpClient, QmpError
from e3backup.sources.hypervisors.qemu.teardown import (
    EXPORT,
    FLEECE,
    JOB,
    TeardownPlan,
    remove_leftovers,
    stop_reading,
    undo_rotations,
)
from e3backup.sources.nbd.reader import NbdExportReader

log = logging.getLogger(__name__)

PREFIX = bitmaps.PREFIX


@dataclass(frozen=True)
class QemuEndpoint:
    qmp: Path
    qga: Path | None = None


@dataclass(frozen=True)
class _BlockDevice:
    disk: VmDisk
    node: str  # the format node: bitmaps live here, fleecing reads from it


class QemuProvider:
    name = "qemu"

    def __init__(self, endpoints: list[QemuEndpoint], scratch_dir: Path | None = None) -> None:
        self.endpoints = list(endpoints)
        self.scratch_dir = scratch_dir or Path(tempfile.gettempdir()) / "e3backup-qemu"

    # --- discovery ------------------------------------------------------------------------------

    def list_vms(self) -> list[VmInfo]:
        return [self.describe(e) for e in self.endpoints]

    def describe(self, endpoint: QemuEndpoint) -> VmInfo:
        with QmpClient(endpoint.qmp) as qmp:
            return _describe(qmp, endpoint)

    def get_vm(self, name_or_id: str) -> VmInfo:
        for endpoint in self.endpoints:
            if str(endpoint.qmp) == name_or_id:
                return self.describe(endpoint)
        problems = []
        for endpoint in self.endpoints:
            try:
                vm = self.describe(endpoint)
            except E3Error as exc:
                problems.append(str(exc))
                continue
            if name_or_id in (vm.name, vm.id) or vm.id.lower() == name_or_id.lower():
                return vm
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise VmNotFound(f"no QEMU VM named or with id {name_or_id!r}{detail}")

    def endpoint_of(self, vm: VmInfo) -> QemuEndpoint:
        qmp = Path(vm.config["qmp"])
        for endpoint in self.endpoints:
            if endpoint.qmp == qmp:
                return endpoint
        return QemuEndpoint(qmp, Path(vm.config["qga"]) if vm.config.get("qga") else None)

    # --- point in time --------------------------------------------------------------------------

    def prepare(
        self, vm: VmInfo, consistency: ConsistencyLevel, tokens: dict[str, str]
    ) -> QemuPointInTime:
        view = QemuPointInTime(self, vm, self.endpoint_of(vm))
        try:
            view.take(consistency, tokens)
        except BaseException:
            view.cleanup()
            raise
        return view


def _describe(qmp: QmpClient, endpoint: QemuEndpoint) -> VmInfo:
    name = qmp.execute("query-name").get("name") or endpoint.qmp.stem
    uuid = str(qmp.execute("query-uuid").get("UUID", ""))
    if not uuid or set(uuid) <= {"0", "-"}:
        uuid = f"qemu-{name}"
    status = str(qmp.execute("query-status").get("status", "unknown"))
    try:
        machine = str(qmp.execute("qom-get", {"path": "/machine", "property": "type"}))
    except QmpError:
        machine = "unknown"
    machine = machine.removesuffix("-machine")
    devices = block_devices(qmp)
    config: dict[str, Any] = {
        "hypervisor": "qemu",
        "qmp": str(endpoint.qmp),
        "qga": str(endpoint.qga) if endpoint.qga else None,
        "machine_type": machine,
        "disks": {d.disk.name: {"node": d.node, "path": d.disk.path} for d in devices},
    }
    with contextlib.suppress(QmpError):
        config["vcpus"] = len(qmp.execute("query-cpus-fast"))
    with contextlib.suppress(QmpError):
        config["memory_bytes"] = qmp.execute("query-memory-size-summary").get("base-memory")
    return VmInfo(uuid, name, status, machine, tuple(d.disk for d in devices), config)


def block_devices(qmp: QmpClient) -> list[_BlockDevice]:
    out = []
    for dev in qmp.execute("query-block"):
        inserted = dev.get("inserted")
        if not inserted or inserted.get("ro"):
            continue
        node = inserted["node-name"]
        fmt = inserted.get("drv", "raw")
        name = _device_name(dev) or node
        size = int(inserted.get("image", {}).get("virtual-size", 0))
        path = str(inserted.get("file", ""))
        out.append(_BlockDevice(VmDisk(name, path, fmt, size, fmt == "qcow2"), node))
    return out


def _device_name(dev: dict[str, Any]) -> str:
    qdev = str(dev.get("qdev", ""))
    parts = qdev.split("/")
    if qdev.startswith("/machine/peripheral/") and len(parts) > 3:
        return parts[3]
    if qdev and not qdev.startswith("/"):
        return qdev
    return str(dev.get("device", ""))


@dataclass
class _Prepared:
    index: int
    device: _BlockDevice
    old_token: str | None
    new_token: str | None
    scratch: Path
    exported: bool = False


class QemuPointInTime:
    """Implements base.PointInTimeView."""

    def __init__(self, provider: QemuProvider, vm: VmInfo, endpoint: QemuEndpoint) -> None:
        self.provider = provider
        self.vm = vm
        self.endpoint = endpoint
        self.consistency = ConsistencyLevel.CRASH
        self.warnings: list[str] = []
        self.warning_code: str | None = None
        self.checkpoint_id = ""
        self.frozen_filesystems = 0
        self._views: list[DiskView] = []
        self._prepared: list[_Prepared] = []
        self._committed = False
        self._cleaned = False
        self._torn_down = False
        self._server_started = False
        tag = vm.id.replace("-", "")[:8]
        self._socket = provider.scratch_dir / f"e3b-{tag}.sock"
        self._scratch_glob = f"e3b-{tag}-*.qcow2"
        provider.scratch_dir.mkdir(parents=True, exist_ok=True)
        self._qmp: QmpClient | None = QmpClient(endpoint.qmp)
        self._plan = TeardownPlan(
            str(endpoint.qmp),
            str(endpoint.qga) if endpoint.qga else None,
            str(provider.scratch_dir),
            self._scratch_glob,
            str(self._socket),
        )
        self._guardian: Guardian | None = None
        self._tag = tag

    @property
    def qmp(self) -> QmpClient:
        if self._qmp is None:
            raise HypervisorError("the point-in-time view is closed")
        return self._qmp

    def disks(self) -> list[DiskView]:
        return list(self._views)

    # --- taking the view ------------------------------------------------------------------------

    def take(self, consistency: ConsistencyLevel, tokens: dict[str, str]) -> None:
        remove_leftovers(self.qmp, self.provider.scratch_dir, self._scratch_glob, self.endpoint.qga)
        self._start_guardian()
        actions: list[dict[str, Any]] = []
        usable: dict[str, tuple[bool, str]] = {}
        for index, device in enumerate(block_devices(self.qmp)):
            disk = device.disk
            token = tokens.get(disk.name)
            if disk.change_tracking:
                usable[disk.name] = bitmaps.reconcile(self.qmp, device.node, token)
            else:
                usable[disk.name] = (
                    False,
                    f"{disk.format} disks cannot keep a persistent dirty bitmap: full read",
                )
            ok = usable[disk.name][0]
            prepared = _Prepared(
                index,
                device,
                old_token=token if ok else None,
                new_token=bitmaps.new_bitmap_name(token) if disk.change_tracking else None,
                scratch=self.provider.scratch_dir / self._scratch_glob.replace("*", str(index)),
            )
            self._prepared.append(prepared)
            self._create_scratch(prepared)
            actions += self._actions(prepared)
        self.checkpoint_id = ",".join(p.new_token or "" for p in self._prepared)
        # Undone unless committed (only where the rotation happened), by cleanup or guardian.
        self._plan.rotations = [
            (p.device.node, p.old_token, p.new_token) for p in self._prepared if p.new_token
        ]
        self._tell_guardian()
        self._point_in_time(consistency, actions)
        self._export(usable)

    def _start_guardian(self) -> None:
        scratch = self.provider.scratch_dir
        try:
            self._guardian = Guardian.start(
                self._plan, scratch / f"e3b-{self._tag}-g.sock", scratch / f"e3b-{self._tag}.log"
            )
        except (E3Error, OSError) as exc:  # the backup is still safe: the next one cleans up
            log.warning("no cleanup guardian for this backup: %s", exc)

    def _tell_guardian(self) -> None:
        if self._guardian is not None:
            self._guardian.update(self._plan)

    def _create_scratch(self, p: _Prepared) -> None:
        Command("qemu-img").run(
            ["create", "-q", "-f", "qcow2", p.scratch, str(p.device.disk.size_bytes)]
        )
        self.qmp.execute(
            "blockdev-add",
            {
                "driver": "qcow2",
                "node-name": f"{FLEECE}{p.index}",
                "file": {"driver": "file", "filename": str(p.scratch)},
                "backing": p.device.node,
            },
        )

    def _actions(self, p: _Prepared) -> list[dict[str, Any]]:
        node = p.device.node
        actions: list[dict[str, Any]] = []
        if p.new_token:
            actions.append(
                {
                    "type": "block-dirty-bitmap-add",
                    "data": {"node": node, "name": p.new_token, "persistent": True},
                }
            )
        if p.old_token:
            actions.append(
                {"type": "block-dirty-bitmap-disable", "data": {"node": node, "name": p.old_token}}
            )
        actions.append(
            {
                "type": "blockdev-backup",
                "data": {
                    "job-id": f"{JOB}{p.index}",
                    "device": node,
                    "target": f"{FLEECE}{p.index}",
                    "sync": "none",
                    "auto-finalize": True,
                    "auto-dismiss": True,
                },
            }
        )
        return actions

    def _point_in_time(self, consistency: ConsistencyLevel, actions: list[dict[str, Any]]) -> None:
        agent = None
        if consistency == ConsistencyLevel.APPLICATION:
            agent = self._freeze()
        try:
            self.qmp.execute("transaction", {"actions": actions})
        finally:
            if agent is not None:
                try:
                    agent.thaw()
                    status = agent.freeze_status()
                    if status != "thawed":
                        raise GuestAgentError(f"guest still {status} after thaw")
                finally:
                    agent.close()
        if agent is not None:
            self.consistency = ConsistencyLevel.APPLICATION

    def _freeze(self) -> GuestAgent | None:
        if self.endpoint.qga is None:
            self._fallback("no guest agent channel is configured for this VM")
            return None
        try:
            agent = GuestAgent(self.endpoint.qga)
        except GuestAgentError as exc:
            self._fallback(str(exc))
            return None
        try:
            agent.ping()
            self.frozen_filesystems = agent.freeze()
        except GuestAgentError as exc:
            with contextlib.suppress(GuestAgentError):
                if agent.freeze_status() == "frozen":
                    agent.thaw()
            agent.close()
            self._fallback(str(exc))
            return None
        return agent

    def _fallback(self, why: str) -> None:
        self.warnings.append(f"guest could not be quiesced ({why}); using crash-consistent backup")
        self.warning_code = WARNING_QUIESCE_FAILED
        self.consistency = ConsistencyLevel.CRASH

    def _export(self, usable: dict[str, tuple[bool, str]]) -> None:
        self._socket.unlink(missing_ok=True)
        self.qmp.execute(
            "nbd-server-start", {"addr": {"type": "unix", "data": {"path": str(self._socket)}}}
        )
        self._server_started = True
        for p in self._prepared:
            disk = p.device.disk
            args: dict[str, Any] = {
                "type": "nbd",
                "id": f"{EXPORT}{p.index}",
                "node-name": f"{FLEECE}{p.index}",
                "name": disk.name,
                "writable": False,
            }
            if p.old_token:
                args["bitmaps"] = [p.old_token]
            self.qmp.execute("block-export-add", args)
            p.exported = True
            reader = NbdExportReader(self._socket, disk.name, p.old_token)
            view = DiskView(disk, reader, p.new_token)
            if p.old_token:
                view.changed_extents = reader.dirty_extents()
            else:
                view.tracking_reason = usable[disk.name][1]
            self._views.append(view)

    # --- commit and cleanup ---------------------------------------------------------------------

    def commit(self) -> None:
        self._teardown()  # an exported bitmap is busy: stop reading first
        for node, old, _new in self._plan.rotations:
            if old:
                bitmaps.remove(self.qmp, node, old)
        self._committed = True
        self._plan.rotations = []
        self._tell_guardian()

    def _teardown(self) -> None:
        """Stop reading: readers, exports, NBD server, jobs, scratch nodes and files."""
        if self._torn_down or self._qmp is None:
            return
        self._torn_down = True
        for view in self._views:
            _quietly(view.reader.close)
        stop_reading(self._qmp, self._plan)

    def cleanup(self) -> None:
        if self._cleaned:
            return
        self._cleaned = True
        try:
            self._teardown()
            if self._qmp is not None:
                if not self._committed:
                    undo_rotations(self._qmp, self._plan.rotations)
                self._qmp.close()
                self._qmp = None
        finally:
            guardian, self._guardian = self._guardian, None
            if guardian is not None:
                guardian.done()


def _quietly(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except E3Error as exc:
        log.warning("cleanup step failed: %s", exc)
