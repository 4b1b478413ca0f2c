"""A directory on a local (or network) filesystem.

Writes go to a uniquely named temporary file in the target directory, are fsynced and then
renamed over the key, so a crash or a concurrent writer never leaves a half-written object under
its final name. Temporary files carry the `.tmp-` prefix and are never listed.

A repository holds key files and data only its owner may read: every directory this backend
creates is 0700 and every object 0600, whatever the umask.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from stat import S_ISREG

from e3backup.core.errors import ObjectNotFound, RangeOutsideObject, StorageError
from e3backup.storage.backend import BackendProperties, ObjectInfo, check_key

TEMP_PREFIX = ".tmp-"
DIR_MODE = 0o700
FILE_MODE = 0o600


class LocalBackend:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def properties(self) -> BackendProperties:
        return BackendProperties(location=str(self.root), parallelism=4)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def put(self, key: str, data: bytes | memoryview) -> None:
        path = self._path(key)
        try:
            _make_dirs(path.parent)
            tmp = path.parent / f"{TEMP_PREFIX}{path.name}-{secrets.token_hex(6)}"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, FILE_MODE)
                with open(fd, "wb") as f:
                    if os.name == "posix":
                        os.fchmod(fd, FILE_MODE)  # the umask may have taken owner bits
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if offset < 0 or (length is not None and length < 0):
                    raise StorageError(f"invalid range {offset}+{length} for {key}")
                end = size if length is None else offset + length
                if max(offset, end) > size:
                    raise RangeOutsideObject(
                        f"range {offset}+{length} outside {key} ({size} bytes)"
                    )
                f.seek(offset)
                return f.read(end - offset)
        except (FileNotFoundError, IsADirectoryError):  # a directory is a prefix, not an object
            raise ObjectNotFound(f"object not found: {key}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ObjectNotFound(f"object not found: {key}") from None
        except OSError as exc:
            raise StorageError(f"cannot stat {path}: {exc.strerror or exc}") from exc
        if not S_ISREG(st.st_mode):
            raise ObjectNotFound(f"object not found: {key}")
        return ObjectInfo(key, st.st_size)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the directory that can hold the prefix, then filter by the full key.
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*directory.split("/")) if directory else self.root
        if not start.is_dir():
            if self.root.exists() and not self.root.is_dir():
                raise StorageError(f"cannot list {self.root}: not a directory")
            return
        for dirpath, _dirnames, filenames in os.walk(start, onerror=_raise_list_error):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            base = "" if rel == "." else rel + "/"
            for name in filenames:
                key = base + name
                if name.startswith(TEMP_PREFIX) or not key.startswith(prefix):
                    continue
                try:
                    size = os.stat(os.path.join(dirpath, name)).st_size
                except FileNotFoundError:  # deleted while listing
                    continue
                yield ObjectInfo(key, size)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except IsADirectoryError:  # a prefix of other keys, not an object: nothing to delete
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete {key}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        pass


_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


def _make_dirs(directory: Path) -> None:
    """mkdir -p where every directory made is DIR_MODE (Path.mkdir leaves parents to the umask)."""
    if directory.is_dir():
        return
    missing = [directory]
    while not missing[-1].parent.exists() and missing[-1].parent != missing[-1]:
        missing.append(missing[-1].parent)
    for each in reversed(missing):
        try:
            os.mkdir(each, DIR_MODE)
        except FileExistsError:  # a concurrent writer made it (with the same mode)
            if not each.is_dir():
                raise
            continue
        os.chmod(each, DIR_MODE)  # mkdir's mode is masked by the umask


def _raise_list_error(exc: OSError) -> None:
    """os.walk skips unreadable directories by default; a listing must not silently omit keys."""
    if isinstance(exc, FileNotFoundError):  # removed while listing
        return
    raise StorageError(f"cannot list {exc.filename}: {exc.strerror or exc}") from exc


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable. Directories cannot be opened for fsync on Windows; skip there."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
