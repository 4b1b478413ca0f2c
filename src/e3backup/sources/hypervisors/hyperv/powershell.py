"""Run PowerShell scripts that answer in JSON, through an injectable transport.

Every script is wrapped the same way: parameters arrive as a JSON literal (never spliced into
the code, so names with quotes, spaces or `$` are inert), errors stop the script, and stdout
is one envelope `{"ok": true, "data": ...}` or `{"ok": false, "error": {message, id,
category, type}}` made by `ConvertTo-Json -Compress` with every non-ASCII character escaped
(`\\uXXXX`), so localized names survive whatever console code page the host uses.

The real transport is `powershell.exe -NoProfile -NonInteractive -EncodedCommand` (or `pwsh`)
through `e3backup.exec`; tests replay recorded exchanges (script → stdout/stderr/exit code).
Windows PowerShell 5.1 quirks the parsers absorb: a one-element result is not an array, enums
are integers (names under PowerShell 7 or when a script casts them), dates are `/Date(ms)/`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from e3backup.core.errors import CommandFailed
from e3backup.exec.command import Command
from e3backup.sources.hypervisors.base import HypervisorError

DEFAULT_TIMEOUT_S = 120.0
_MARKER = "# e3b:"

_WRAPPER = r"""{marker}{op}
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$p = ConvertFrom-Json @'
{params}
'@
function E3bOut($o) {{
  $j = ConvertTo-Json -InputObject $o -Depth 8 -Compress
  $esc = {{ param($m) '\u{{0:x4}}' -f [int][char]$m.Value }}
  [Console]::Out.Write([regex]::Replace($j, '[^\x00-\x7F]', $esc))
}}
try {{
  $r = & {{
{body}
  }}
  E3bOut @{{ ok = $true; data = $r }}
}} catch {{
  $e = $_
  E3bOut @{{ ok = $false; error = @{{ message = "$($e.Exception.Message)";
    id = "$($e.FullyQualifiedErrorId)"; category = "$($e.CategoryInfo.Category)";
    type = "$($e.Exception.GetType().FullName)" }} }}
  exit 1
}}
"""


@dataclass(frozen=True)
class TransportResult:
    stdout: str
    stderr: str = ""
    exit_code: int = 0


class Transport(Protocol):
    def run(self, script: str, timeout_s: float) -> TransportResult: ...


class PowerShellError(HypervisorError):
    """A script's error record: the cmdlet's own message, plus its error id and category."""

    def __init__(self, op: str, message: str, error_id: str = "", category: str = "") -> None:
        super().__init__(f"{op}: {message}")
        self.op = op
        self.message = message
        self.error_id = error_id
        self.category = category


class ExecTransport:
    """The real one: Windows PowerShell 5.1 if present, else PowerShell 7 (`pwsh`)."""

    def __init__(self, executable: str | None = None) -> None:
        if executable is None:
            executable = next(
                (n for n in ("powershell.exe", "powershell", "pwsh") if Command(n).available()),
                "powershell.exe",
            )
        self.command = Command(executable, allowed_exit_codes=(0, 1))

    def run(self, script: str, timeout_s: float) -> TransportResult:
        encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
        args = ["-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass"]
        try:
            result = self.command.run([*args, "-EncodedCommand", encoded], timeout_s=timeout_s)
        except CommandFailed as exc:
            raise HypervisorError(f"PowerShell failed: {exc}") from exc
        return TransportResult(result.stdout, result.stderr, result.returncode)


def script_for(op: str, body: str, params: Mapping[str, Any] | None = None) -> str:
    """The full script for `body`; `$p` holds `params` inside it."""
    literal = json.dumps(dict(params or {}), ensure_ascii=True)
    indented = "\n".join("    " + line if line else line for line in body.strip().splitlines())
    return _WRAPPER.format(marker=_MARKER, op=op, params=literal, body=indented)


def op_of(script: str) -> str:
    """The operation name a script was built for (its first line)."""
    first = script.split("\n", 1)[0]
    return first[len(_MARKER) :].strip() if first.startswith(_MARKER) else ""


class PowerShell:
    """`run(op, body, params)` → the script's `data`, or PowerShellError / HypervisorError."""

    def __init__(self, transport: Transport, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.transport = transport
        self.timeout_s = timeout_s

    def run(
        self,
        op: str,
        body: str,
        params: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        result = self.transport.run(script_for(op, body, params), timeout_s or self.timeout_s)
        return parse_envelope(op, result)


def parse_envelope(op: str, result: TransportResult) -> Any:
    text = result.stdout.strip().lstrip("\ufeff")
    doc: Any = None
    if text:
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
    if not isinstance(doc, dict) or "ok" not in doc:
        detail = clean_stderr(result.stderr) or text[:300] or "no output"
        raise HypervisorError(
            f"{op}: PowerShell gave no usable answer (exit code {result.exit_code}): {detail}"
        )
    if doc["ok"] is True:
        return doc.get("data")
    found = doc.get("error")
    error: dict[str, Any] = found if isinstance(found, dict) else {}
    message = str(error.get("message") or "").strip() or "failed without a message"
    raise PowerShellError(op, message, str(error.get("id") or ""), str(error.get("category") or ""))


_CLIXML_ERROR = re.compile(r'<S S="Error">(.*?)</S>', re.DOTALL)


def clean_stderr(stderr: str) -> str:
    """stderr as text: PowerShell writes errors as CLIXML when its output is redirected."""
    text = stderr.strip()
    if text.startswith("#< CLIXML"):
        parts = [p.replace("_x000D__x000A_", "\n") for p in _CLIXML_ERROR.findall(text)]
        text = "".join(parts).strip()
        text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return text[-500:]


# --- parsing helpers for PowerShell's JSON -----------------------------------------------------


def as_list(value: Any) -> list[Any]:
    """A PowerShell result as a list: null → [], one object → [it], an array as is."""
    if value is None:
        return []
    if isinstance(value, list):
        return [v for v in value if v is not None]
    return [value]


def as_int(value: Any, default: int = 0) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def as_str(value: Any) -> str:
    return "" if value is None else str(value)


def enum_name(value: Any, names: Mapping[int, str]) -> str:
    """An enum given as an int (5.1), a digit string, or its name (7, or cast in the script);
    the canonical name from `names`, else the value as text."""
    if isinstance(value, bool) or value is None:
        return as_str(value)
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        return names.get(int(value), str(value))
    text = str(value).strip()
    for name in names.values():
        if name.lower() == text.lower():
            return name
    return text


_MS_DATE = re.compile(r"^/?\\?/?Date\((-?\d+)([+-]\d{4})?\)\\?/?$")


def parse_date(value: Any) -> datetime | None:
    """`/Date(1700000000000)/` (ConvertTo-Json in 5.1), ISO 8601 (7), or None."""
    if value is None or value == "":
        return None
    if isinstance(value, dict) and "value" in value:  # 5.1 sometimes wraps DateTime
        return parse_date(value["value"])
    text = str(value).strip()
    match = _MS_DATE.match(text)
    if match:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(match.group(1)))
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def ps_quote(text: str) -> str:
    """A PowerShell single-quoted literal (for the few places a value must be code)."""
    return "'" + text.replace("'", "''") + "'"
