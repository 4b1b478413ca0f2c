"""Where a differencing VHDX's parent is, and whether a candidate file really is that parent.

The parent locator holds Windows paths (`relative_path`, `volume_path`, `absolute_win32_path`),
usually written on another machine, so the candidates are: each path as given (backslashes
turned into separators, relative ones taken from the child's directory), then each path's
file name next to the child, which is how a chain copied to a backup host is laid out. A
candidate is accepted only if its DataWriteGuid matches the child's `parent_linkage`.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path, PurePosixPath

from e3backup.core.errors import ImageFormatError

MAX_CHAIN_DEPTH = 64  # Hyper-V checkpoint trees are far shallower; deeper means a loop or junk
_PATH_KEYS = ("relative_path", "volume_path", "absolute_win32_path")


def parent_candidates(child: Path, locator: dict[str, str]) -> list[Path]:
    """Existing files that may be the parent, most specific first, without duplicates."""
    base = child.parent
    paths: list[Path] = []
    names: list[Path] = []
    for key in _PATH_KEYS:
        value = locator.get(key, "").strip()
        if not value or "\0" in value:
            continue
        posix = value.replace("\\", "/")
        if key == "relative_path":
            paths.append(base / posix)
        elif os.name == "nt":
            paths.append(Path(value))
        elif posix.startswith("/"):
            paths.append(Path(posix))
        name = PurePosixPath(posix).name
        if name and name not in (".", ".."):
            names.append(base / name)
    found: list[Path] = []
    for candidate in paths + names:
        try:
            if candidate.is_file() and candidate not in found:
                found.append(candidate)
        except OSError:  # names too long, permission denied on a directory, ...
            continue
    return found


def linkage_guids(child: Path, locator: dict[str, str]) -> set[uuid.UUID]:
    """The parent DataWriteGuids the child accepts (`parent_linkage`, `parent_linkage2`)."""
    guids = set()
    for key in ("parent_linkage", "parent_linkage2"):
        value = locator.get(key)
        if value is None:
            continue
        try:
            guids.add(uuid.UUID(value.strip()))
        except ValueError as exc:
            raise ImageFormatError(
                f"{child}: parent locator {key} {value!r} is not a GUID"
            ) from exc
    return guids


def format_linkage(guid: uuid.UUID) -> str:
    """How Hyper-V writes a DataWriteGuid in a parent locator."""
    return "{" + str(guid) + "}"
