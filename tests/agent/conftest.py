"""Agent tests: a live server (SQLite) + real agent processes; helpers in agent_harness.py."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fixtures.vm import guest_image, make_vm

__all__ = ["guest_image", "make_vm"]
MIB = 1024 * 1024


@pytest.fixture
def random_image(tmp_path: Path) -> Path:
    """A 40 MiB image of incompressible data: three packs, so a capped upload takes a while."""
    path = tmp_path / "big.img"
    path.write_bytes(random.Random(7).randbytes(40 * MIB))
    return path
