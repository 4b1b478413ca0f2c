"""Runs the real `e3backup` console script as a subprocess, and makes test images.

The only place in the integration tests that starts processes: every test goes through `Cli`,
so the environment (repository, password, no terminal) is the same everywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e3backup.repo.keys import FAST_KDF_ENV

E3BACKUP = Path(sys.executable).parent / "e3backup"
PASSWORD = "correct horse battery staple"
KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Run:
    """The outcome of one CLI run."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def describe(self) -> str:
        return (
            f"e3backup {' '.join(self.args)} → exit {self.returncode}\n"
            f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        )


class Cli:
    """The CLI bound to one repository (passed as $E3BACKUP_REPO) and one password."""

    def __init__(self, repo: Path, password: str | None = PASSWORD) -> None:
        self.repo = repo
        self.password = password

    def env(self, **overrides: str | None) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("E3BACKUP_") or k == FAST_KDF_ENV  # cheap test key files
        }
        env["E3BACKUP_REPO"] = str(self.repo)
        if self.password is not None:
            env["E3BACKUP_PASSWORD"] = self.password
        env["COLUMNS"] = "80"  # what a pipe gets anyway; long messages must not wrap
        for key, value in overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def run(self, *args: str | Path, timeout_s: float = 120, **env: str | None) -> Run:
        argv = tuple(str(a) for a in args)
        proc = subprocess.run(
            [str(E3BACKUP), *argv],
            env=self.env(**env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        return Run(argv, proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str | Path, **env: str | None) -> Run:
        result = self.run(*args, **env)
        assert result.returncode == 0, result.describe()
        return result

    def start(self, *args: str | Path, stderr: bool = False) -> subprocess.Popen[bytes]:
        """Start a run in the background (for killing it); output is discarded, except stderr
        when asked for (read `proc.stderr` line by line to wait for a log line)."""
        return subprocess.Popen(
            [str(E3BACKUP), *(str(a) for a in args)],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if stderr else subprocess.DEVNULL,
        )

    # --- conveniences -----------------------------------------------------------------------

    def init(self, *args: str) -> None:
        self.ok("repo", "init", *args)

    def backup(self, image: Path, *args: str | Path) -> dict[str, Any]:
        doc: dict[str, Any] = self.ok("backup", "image", image, "--json", *args).json()
        return doc

    def snapshots(self) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = self.ok("snapshots", "--json").json()
        return docs

    def restore(self, snapshot: str, target: Path, *args: str) -> Run:
        return self.run("restore", snapshot, "--to", target, *args)


def assert_one_line_error(result: Run, *needles: str) -> None:
    """A failed run: non-zero exit, one clear line on stderr, no traceback."""
    assert result.returncode != 0, result.describe()
    assert "Traceback" not in result.stderr, result.describe()
    lines = result.stderr.strip("\n").splitlines()
    assert len(lines) == 1, result.describe()
    assert lines[0].startswith("error: "), result.describe()
    for needle in needles:
        assert needle.lower() in lines[0].lower(), result.describe()


# --- images ---------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MiB):
            h.update(block)
    return h.hexdigest()


def allocated_bytes(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def random_bytes(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def write_random(path: Path, size: int, seed: int) -> None:
    path.write_bytes(random.Random(seed).randbytes(size))


def write_sparse(path: Path, size: int, writes: list[tuple[int, bytes]]) -> None:
    """A sparse file of `size` bytes with `writes` (offset, data) and holes elsewhere."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in writes:
            f.seek(offset)
            f.write(data)


def patch(path: Path, offset: int, data: bytes) -> None:
    """Overwrite bytes in place (the file keeps its size unless written past the end)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def chunks_touched(ranges: list[tuple[int, int]], chunk_size: int) -> set[int]:
    """Numbers of the chunks that (offset, length) ranges overlap."""
    touched: set[int] = set()
    for offset, length in ranges:
        if length > 0:
            touched.update(range(offset // chunk_size, (offset + length - 1) // chunk_size + 1))
    return touched
