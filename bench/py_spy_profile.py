"""Where a server's CPU goes: `py-spy record --gil --format raw` (collapsed stacks of the thread
holding the GIL) over one bench step, summarised as self time by package and the top functions
by self time. Time in C extensions that release the GIL (psycopg waiting, sqlite3) is missed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

PACKAGES = (
    ("e3backup/server", "e3backup server"),
    ("sqlalchemy", "sqlalchemy"),
    ("psycopg", "psycopg"),
    ("sqlite3", "sqlite3"),
    ("uvicorn", "uvicorn"),
    ("httptools", "uvicorn"),
    ("starlette", "starlette"),
    ("fastapi", "fastapi"),
    ("pydantic", "pydantic"),
    ("anyio", "anyio (threadpool)"),
    ("concurrent/futures", "threads"),
    ("threading.py", "threads"),
    ("prometheus_client", "prometheus_client"),
    ("asyncio", "asyncio/uvloop"),
    ("uvloop", "asyncio/uvloop"),
)


@dataclass
class Spy:
    process: subprocess.Popen[bytes]
    output: Path


def py_spy_binary() -> str:
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    return found


def start_py_spy(pid: int, duration_s: float, workdir: Path, cpus: set[int]) -> Spy:
    output = workdir / "py-spy.txt"
    argv = [py_spy_binary(), "record", "--pid", str(pid), "--duration", str(int(duration_s))]
    argv += ["--rate", "100", "--format", "raw", "--output", str(output), "--nonblocking", "--gil"]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )
    return Spy(process, output)


def finish_py_spy(spy: Spy, top: int = 12) -> list[tuple[str, float]]:
    """[(label, % of samples)]: self time by package, then the top functions by self time."""
    spy.process.wait(timeout=120)
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    total = 0
    for line in spy.output.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        leaf = stack.rsplit(";", 1)[-1]
        total += count
        by_package[_package(leaf)] += count
        by_function[leaf.split(" (", 1)[0] + " " + _short_file(leaf)] += count
    if not total:
        return []
    rows = [(f"package {name}", n * 100 / total) for name, n in by_package.most_common()]
    rows += [(f"function {name}", n * 100 / total) for name, n in by_function.most_common(top)]
    return rows


def _package(frame: str) -> str:
    for needle, label in PACKAGES:
        if needle in frame:
            return label
    return "other (C, stdlib)"


def _short_file(frame: str) -> str:
    if " (" not in frame:
        return ""
    where = frame.split(" (", 1)[1].rstrip(")")
    parts = where.replace("\\", "/").split("/")
    return "(" + "/".join(parts[-2:]) + ")"
