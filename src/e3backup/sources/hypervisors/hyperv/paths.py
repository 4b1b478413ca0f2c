"""Windows paths as Hyper-V reports them, and the host checks done before a backup.

Hyper-V gives plain drive paths (`D:\\Hyper-V\\web 01\\disk.vhdx`), Cluster Shared Volume
paths (`C:\\ClusterStorage\\Volume1\\…`: ordinary paths on every node, nothing special) and
sometimes long-path forms (`\\\\?\\D:\\…`, `\\\\?\\UNC\\server\\share\\…`). Comparisons use
one normalized form; files are opened with the long-path prefix when the path is long.
Spaces need nothing: paths never go through a shell (scripts get them as JSON data).
"""

from __future__ import annotations

import ntpath
import os
from collections.abc import Callable
from pathlib import Path

from e3backup.sources.hypervisors.base import HypervisorError

PathMapper = Callable[[str], Path]
_LONG = "\\\\?\\"
_LONG_UNC = "\\\\?\\UNC\\"
_MAX_PLAIN = 240  # below MAX_PATH (260) with room for an AVHDX name next to it

ELEVATION_CHECK = r"""
$id = [Security.Principal.WindowsIdentity]::GetCurrent()
$admin = ([Security.Principal.WindowsPrincipal]$id).IsInRole(
  [Security.Principal.WindowsBuiltInRole]::Administrator)
$module = [bool](Get-Module -ListAvailable -Name Hyper-V)
@{ User = $id.Name; Elevated = $admin; HyperVModule = $module }
"""


def display(path: str) -> str:
    """`path` without a long-path prefix: how a user would type it."""
    text = path.strip().strip('"')
    if text.upper().startswith(_LONG_UNC.upper()):
        return "\\\\" + text[len(_LONG_UNC) :]
    if text.startswith(_LONG):
        return text[len(_LONG) :]
    return text


def normalize(path: str) -> str:
    """A comparison key: no prefix, backslashes, no doubled separators, case-folded."""
    text = display(path).replace("/", "\\")
    unc = text.startswith("\\\\")
    body = ntpath.normpath(text.lstrip("\\") if unc else text)
    return (("\\\\" + body) if unc else body).rstrip("\\").casefold()


def same_path(a: str, b: str) -> bool:
    return normalize(a) == normalize(b)


def local_path(path: str) -> Path:
    """The path to open on this (Windows) host; long paths get the `\\\\?\\` prefix."""
    text = display(path)
    if os.name == "nt" and len(text) > _MAX_PLAIN:
        if text.startswith("\\\\"):
            return Path(_LONG_UNC + text[2:])
        return Path(_LONG + ntpath.abspath(text))
    return Path(text)


def require_elevation(answer: object) -> None:
    """The elevation check's answer → nothing, or a clear HypervisorError."""
    doc = answer if isinstance(answer, dict) else {}
    if not doc.get("HyperVModule", True):
        raise HypervisorError(
            "the Hyper-V PowerShell module is not installed on this host "
            "(Install-WindowsFeature Hyper-V-PowerShell, or enable "
            "Microsoft-Hyper-V-Management-PowerShell)"
        )
    if not doc.get("Elevated"):
        user = str(doc.get("User") or "the agent's account")
        raise HypervisorError(
            f"Hyper-V backups need administrator rights: {user} is not elevated. Run the "
            "agent service as LocalSystem or as a member of Administrators (a member of "
            "'Hyper-V Administrators' may also list VMs but cannot read their disk files)"
        )
