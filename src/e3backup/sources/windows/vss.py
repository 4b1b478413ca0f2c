"""VSS shadow copies of a volume through WMI (`Win32_ShadowCopy.Create`, context
ClientAccessible — the call go-vss makes for seed 003), over the Hyper-V provider's PowerShell
runner (`powershell.py`: JSON envelope, injectable transport, recorded exchanges in tests).

`shadow(volume)` creates the copy, looks up its device (`\\\\?\\GLOBALROOT\\Device\\
HarddiskVolumeShadowCopyN`, read without a trailing slash) and deletes it on every exit path:
success, error, cancel. Create's documented return codes become clear messages; a veto or
provider failure (10, 12) also names the VSS writers that are in a failed state, from
`vssadmin list writers` parsed without relying on its localized labels.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from e3backup.core.errors import SourceError
from e3backup.sources.hypervisors.base import HypervisorError
from e3backup.sources.hypervisors.hyperv.powershell import PowerShell, as_int, as_str, script_for

log = logging.getLogger(__name__)

SHADOW_DEVICE_PREFIX = "\\\\?\\GLOBALROOT\\Device\\HarddiskVolumeShadowCopy"
# Win32_ShadowCopy.Create return values (WMI documentation of the method).
CREATE_RESULTS = {
    1: "access denied (the agent must run as Administrator)",
    2: "invalid argument",
    3: "the volume was not found",
    4: "the volume is not supported by VSS",
    5: "unsupported shadow copy context",
    6: "not enough shadow copy storage on the volume",
    7: "the volume is in use",
    8: "the maximum number of shadow copies is reached",
    9: "another shadow copy operation is already in progress",
    10: "a VSS writer or provider vetoed the shadow copy",
    11: "the shadow copy provider is not registered",
    12: "the shadow copy provider failed",
    13: "unknown error",
}
WRITER_FAILURE_CODES = {10, 12}
FAILED_WRITER_STATES = range(6, 16)  # VSS_WS_FAILED_AT_IDENTIFY … VSS_WS_FAILED_AT_BACKUPSHUTDOWN

CREATE = """
$r = Invoke-CimMethod -ClassName Win32_ShadowCopy -MethodName Create `
  -Arguments @{ Volume = $p.volume; Context = 'ClientAccessible' }
@{ ReturnValue = [int]$r.ReturnValue; ShadowID = "$($r.ShadowID)" }
"""
GET = """
$s = Get-CimInstance -ClassName Win32_ShadowCopy -Filter ("ID='{0}'" -f $p.id)
if ($null -eq $s) { return $null }
@{ ID = "$($s.ID)"; DeviceObject = "$($s.DeviceObject)"; VolumeName = "$($s.VolumeName)" }
"""
DELETE = """
$s = Get-CimInstance -ClassName Win32_ShadowCopy -Filter ("ID='{0}'" -f $p.id)
if ($null -eq $s) { return @{ deleted = $false } }
Remove-CimInstance -InputObject $s
@{ deleted = $true }
"""
WRITERS = """
$out = & vssadmin.exe list writers 2>&1 | ForEach-Object { "$_" }
@{ exit = $LASTEXITCODE; lines = @($out) }
"""
_GUID = re.compile(
    r"^\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}$"
)
_DRIVE = re.compile(r"^([A-Za-z]):\\?$")
_VOLUME_GUID = re.compile(r"^\\\\\?\\Volume\{[0-9A-Fa-f-]{36}\}\\?$")


class VssError(SourceError):
    """A shadow copy could not be made, found or used."""


@dataclass(frozen=True)
class ShadowCopy:
    id: str
    device: str  # \\?\GLOBALROOT\Device\HarddiskVolumeShadowCopyN, no trailing slash
    volume: str


@dataclass(frozen=True)
class WriterStatus:
    name: str
    state: int
    state_text: str
    last_error: str

    @property
    def failed(self) -> bool:
        return self.state in FAILED_WRITER_STATES


def normalize_volume(source: str) -> str | None:
    """`C:`, `c:\\` → `C:\\`; `\\\\?\\Volume{guid}` → with its trailing backslash; else None."""
    text = source.strip()
    drive = _DRIVE.match(text)
    if drive:
        return drive.group(1).upper() + ":\\"
    if _VOLUME_GUID.match(text):
        return text.rstrip("\\") + "\\"
    return None


def parse_writers(lines: Iterable[str]) -> list[WriterStatus]:
    """`vssadmin list writers`: per writer a `'name'` line, two `{guid}` lines, a `[n] state`
    line and a last-error line; the labels before the colons are localized, so unused."""
    found: list[WriterStatus] = []
    name: str | None = None
    state: tuple[int, str] | None = None
    for raw in lines:
        line = raw.strip()
        value = line.split(":", 1)[1].strip() if ":" in line else ""
        quoted = re.fullmatch(r"'(.*)'", value)
        bracket = re.fullmatch(r"\[(\d+)\]\s*(.*)", value)
        if quoted and not _GUID.match(value):
            name, state = quoted.group(1), None
        elif name is not None and bracket and state is None:
            state = (int(bracket.group(1)), bracket.group(2))
        elif name is not None and state is not None and value:
            found.append(WriterStatus(name, state[0], state[1], value))
            name, state = None, None
    return found


def describe_failed(writers: Iterable[WriterStatus]) -> str:
    return "; ".join(
        f"'{w.name}' [{w.state}] {w.state_text} (last error: {w.last_error})"
        for w in writers
        if w.failed
    )


class Vss:
    def __init__(self, ps: PowerShell) -> None:
        self.ps = ps

    def _run(self, op: str, body: str, params: dict[str, str] | None = None) -> object:
        try:
            return self.ps.run(op, body, params)
        except HypervisorError as exc:
            raise VssError(f"VSS {exc}") from exc

    def create(self, volume: str) -> str:
        """A new shadow copy of `volume` (normalized); its id."""
        answer = self._run("vss-create", CREATE, {"volume": volume})
        data = answer if isinstance(answer, dict) else {}
        code = as_int(data.get("ReturnValue"), -1)
        if code != 0:
            raise VssError(self._create_failure(volume, code))
        shadow_id = as_str(data.get("ShadowID"))
        if not _GUID.match(shadow_id):
            raise VssError(f"VSS: Win32_ShadowCopy.Create gave no usable shadow id ({shadow_id!r})")
        return shadow_id

    def _create_failure(self, volume: str, code: int) -> str:
        meaning = CREATE_RESULTS.get(code, "undocumented return value")
        message = f"VSS shadow copy of {volume} failed: {meaning} (Win32_ShadowCopy.Create {code})"
        if code in WRITER_FAILURE_CODES:
            try:
                failed = describe_failed(self.writers())
            except VssError as exc:
                failed = f"writer states unavailable: {exc}"
            message += f"; failed writers: {failed or 'none reported'}"
        return message

    def get(self, shadow_id: str) -> ShadowCopy:
        data = self._run("vss-get", GET, {"id": shadow_id})
        if not isinstance(data, dict):
            raise VssError(f"VSS: shadow copy {shadow_id} vanished right after it was created")
        device = as_str(data.get("DeviceObject")).rstrip("\\")
        if not device.startswith(SHADOW_DEVICE_PREFIX):
            raise VssError(f"VSS: shadow copy {shadow_id} has no usable device ({device!r})")
        return ShadowCopy(shadow_id, device, as_str(data.get("VolumeName")))

    def delete(self, shadow_id: str) -> bool:
        """Delete the shadow copy; False when it was already gone."""
        data = self._run("vss-delete", DELETE, {"id": shadow_id})
        return bool(isinstance(data, dict) and data.get("deleted"))

    def writers(self) -> list[WriterStatus]:
        data = self._run("vss-writers", WRITERS)
        lines = data.get("lines") if isinstance(data, dict) else None
        return parse_writers(as_str(line) for line in (lines or []))

    @contextmanager
    def shadow(self, volume: str) -> Iterator[ShadowCopy]:
        """A shadow copy of `volume` for the duration of the block, deleted however it ends."""
        shadow_id = self.create(volume)
        try:
            yield self.get(shadow_id)
        finally:
            try:
                if not self.delete(shadow_id):
                    log.warning("VSS shadow copy %s was already gone", shadow_id)
            except VssError as exc:
                log.warning("could not delete VSS shadow copy %s: %s", shadow_id, exc)


def delete_argv(shadow_id: str, executable: str = "powershell.exe") -> list[str]:
    """The command that deletes the shadow copy if the engine process dies (agent cleanup)."""
    script = script_for("vss-delete", DELETE, {"id": shadow_id})
    encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    return [executable, "-NoProfile", "-NonInteractive", "-EncodedCommand", encoded]
