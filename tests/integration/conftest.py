"""Integration tests: the real `e3backup` console script on real files in `tmp_path`.

Each test gets `cli`, the CLI bound to a not-yet-created repository under its `tmp_path`.
Helpers (the subprocess wrapper, image builders) live in `cli_harness.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_harness import E3BACKUP, Cli


@pytest.fixture(scope="session", autouse=True)
def _console_script() -> None:
    assert E3BACKUP.is_file(), f"{E3BACKUP} is missing: install the package into this venv"


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "repo")
