"""Remote filesystem browser (seed BrowseDirectory): with an empty path the roots (drives on
Windows, `/` and mount points elsewhere), else one directory's entries — folders first, at most
1000, lazily (one level per call). An entry that cannot be read is reported with its error; a
path that is not absolute or contains `..` is refused (traversal guard)."""

from __future__ import annotations

import os
import string
import sys
from pathlib import Path, PurePath
from typing import Any

MAX_ENTRIES = 1000


def _roots() -> list[dict[str, Any]]:
    if sys.platform == "win32":
        drives = [f"{c}:\\" for c in string.ascii_uppercase if os.path.exists(f"{c}:\\")]
        return [{"name": d, "path": d, "type": "drive", "icon": "drive"} for d in drives]
    return [{"name": "/", "path": "/", "type": "drive", "icon": "drive"}]


def _entry(item: os.DirEntry[str]) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": item.name, "path": item.path}
    try:
        is_dir = item.is_dir(follow_symlinks=False)
        doc["type"] = "dir" if is_dir else "file"
        doc["icon"] = "folder" if is_dir else "file"
        if not is_dir:
            doc["size_bytes"] = item.stat(follow_symlinks=False).st_size
    except OSError as exc:
        doc.update(type="unknown", icon="file", error=exc.strerror or str(exc))
    return doc


def browse(path: str) -> dict[str, Any]:
    """The seed's listing: {path, parent, entries, truncated, error}."""
    if not path:
        return {"path": "", "entries": _roots(), "error": None}
    if ".." in PurePath(path).parts or not os.path.isabs(path):
        return {"path": path, "entries": [], "error": "the path must be absolute, without '..'"}
    directory = Path(path)
    try:
        with os.scandir(directory) as items:
            entries = [_entry(i) for i in items]
    except OSError as exc:
        return {"path": path, "entries": [], "error": f"cannot list {path}: {exc.strerror or exc}"}
    entries.sort(key=lambda e: (e.get("type") != "dir", e["name"].lower()))
    return {
        "path": str(directory),
        "entries": entries[:MAX_ENTRIES],
        "error": None,
        **({"truncated": True} if len(entries) > MAX_ENTRIES else {}),
    }
