"""Lets the contract tests import their shared world helpers (contract_world.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
