"""Whether an image file was written to while it was read (size or modification time moved).

For container formats (qcow2, VHDX, ...) the file changing means something wrote to the disk
during the backup, usually a running VM: the snapshot may mix old and new data. Raw files have
stricter checks of their own (sources/image.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from e3backup.core.errors import SourceError


@dataclass(frozen=True)
class FileStamp:
    size_bytes: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileStamp:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise SourceError(f"{path}: cannot stat: {exc.strerror or exc}") from exc
        return cls(st.st_size, st.st_mtime_ns)

    def changes(self, path: Path) -> list[str]:
        """One warning if `path` no longer matches this stamp, else none."""
        now = FileStamp.of(path)
        if now == self:
            return []
        return [
            f"{path} was written to while it was read (file size {self.size_bytes} → "
            f"{now.size_bytes} bytes); the snapshot may mix old and new data (back up a "
            "stopped VM's image, or the running VM with `backup vm`)"
        ]
