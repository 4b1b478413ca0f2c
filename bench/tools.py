"""Backup tools under test, and the one place the benchmark starts processes.

A `Tool` knows how to init a repository, back up the shared working image and
restore the latest snapshot to a file. Every command runs through `run_measured`,
which reaps the child with os.wait4 so peak RSS and CPU time are the child's own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from make_image import copy_sparse

PASSWORD = "bench-password-not-secret"
REPO_ROOT = Path(__file__).resolve().parents[1]


class BenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class Measurement:
    wall_s: float
    cpu_s: float
    max_rss_bytes: int


Restored = tuple[Measurement, Path]


def run_measured(
    argv: list[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    sync_after: bool = True,
) -> Measurement:
    """Run argv to completion; wall time includes a final sync() when sync_after is set,
    so tools that fsync and tools that leave dirty pages behind pay the same."""
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        started = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if sync_after:
            os.sync()
        wall_s = time.monotonic() - started
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise BenchError(f"{argv[0]} exited {proc.returncode}; log {log_path}:\n{tail}")
    return Measurement(wall_s, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024)


def output_of(argv: list[str], env: dict[str, str] | None = None) -> str:
    """Short informational commands (versions); failures become the error text."""
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **(env or {})},
            check=False,
        )
    except OSError as exc:
        return f"unavailable ({exc})"
    return (
        (result.stdout or result.stderr).strip().splitlines()[0]
        if (result.stdout or result.stderr)
        else f"exit {result.returncode}"
    )


def resolve(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise BenchError(f"{binary} not found (bench/run.sh installs restic and borgbackup)")
    return path


class Tool(Protocol):
    name: str

    def version(self) -> str: ...
    def init(self, repo: Path, log: Path) -> Measurement: ...
    def backup(self, repo: Path, image: Path, day: int, log: Path) -> Measurement: ...
    def restore(self, repo: Path, out_dir: Path, image: Path, log: Path) -> Restored:
        """Restore the latest snapshot under out_dir; return the restored image's path."""
        ...


class Restic:
    """repo may also be a backend URL such as 's3:http://host:port/bucket/prefix'; env adds
    variables (e.g. AWS credentials) to every command."""

    def __init__(self, cache_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = "restic"
        self._bin = resolve("restic")
        self._cache = cache_dir
        self._env = {"RESTIC_PASSWORD": PASSWORD, **(env or {})}

    def _argv(self, repo: Path | str, *args: str) -> list[str]:
        return [self._bin, "-r", str(repo), "--cache-dir", str(self._cache), *args]

    def version(self) -> str:
        return output_of([self._bin, "version"])

    def init(self, repo: Path | str, log: Path) -> Measurement:
        argv = self._argv(repo, "init", "--repository-version", "2")
        return run_measured(argv, log, env=self._env)

    def backup(self, repo: Path | str, image: Path, day: int, log: Path) -> Measurement:
        argv = self._argv(repo, "backup", "--compression", "auto", "--host", "bench", str(image))
        return run_measured(argv, log, env=self._env)

    def restore(self, repo: Path | str, out_dir: Path, image: Path, log: Path) -> Restored:
        argv = self._argv(repo, "restore", "latest", "--target", str(out_dir))
        m = run_measured(argv, log, env=self._env)
        return m, out_dir / image.resolve().relative_to("/")


class Borg:
    """borg 1.2; chunker_params None = default buzhash, else e.g. 'fixed,4194304'."""

    def __init__(self, name: str, home_dir: Path, chunker_params: str | None) -> None:
        self.name = name
        self._bin = resolve("borg")
        self._chunker = chunker_params
        self._last_archive = ""
        self._env = {"BORG_PASSPHRASE": PASSWORD, "BORG_BASE_DIR": str(home_dir)}

    def version(self) -> str:
        return output_of([self._bin, "--version"])

    def init(self, repo: Path, log: Path) -> Measurement:
        argv = [self._bin, "init", "--encryption=repokey-blake2", str(repo)]
        return run_measured(argv, log, env=self._env)

    def backup(self, repo: Path, image: Path, day: int, log: Path) -> Measurement:
        argv = [self._bin, "create"]
        if self._chunker:
            # --sparse (hole detection) only works with the fixed chunker.
            argv += ["--chunker-params", self._chunker, "--sparse"]
        self._last_archive = f"{repo}::day{day}"
        argv += [self._last_archive, str(image.resolve())]
        return run_measured(argv, log, env=self._env)

    def restore(self, repo: Path, out_dir: Path, image: Path, log: Path) -> Restored:
        argv = [self._bin, "extract", "--sparse", self._last_archive]
        m = run_measured(argv, log, env=self._env, cwd=out_dir)
        return m, out_dir / image.resolve().relative_to("/")


class E3backup:
    """repo may also be 's3://bucket/prefix'; env adds variables (e.g. AWS credentials)."""

    def __init__(self, chunk_size: str, binary: str, env: dict[str, str] | None = None) -> None:
        self.name = f"e3backup-{chunk_size}"
        self._chunk = chunk_size
        self._bin = resolve(binary)
        self._env = {"E3BACKUP_PASSWORD": PASSWORD, **(env or {})}

    def version(self) -> str:
        version = output_of([self._bin, "--version"])
        commit = output_of(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
        return f"{version} (git {commit})"

    def init(self, repo: Path | str, log: Path) -> Measurement:
        argv = [self._bin, "--repo", str(repo), "repo", "init", "--chunk-size", self._chunk]
        return run_measured(argv, log, env=self._env)

    def backup(self, repo: Path | str, image: Path, day: int, log: Path) -> Measurement:
        argv = [self._bin, "--repo", str(repo), "backup", "image", str(image)]
        return run_measured(argv, log, env=self._env)

    def restore(
        self, repo: Path | str, out_dir: Path, image: Path, log: Path, fmt: str | None = None
    ) -> Restored:
        """fmt: `restore --format` (raw, vhdx, ...); the target is out_dir / image.name."""
        target = out_dir / image.name
        argv = [self._bin, "--repo", str(repo), "restore", "latest", "--to", str(target)]
        if fmt is not None:
            argv += ["--format", fmt]
        return run_measured(argv, log, env=self._env), target


def copy_image(src: Path, dst: Path) -> None:
    """Overwrite dst in place (same inode, new mtime) keeping holes, then flush."""
    copy_sparse(src, dst)
    os.sync()
