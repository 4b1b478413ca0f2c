"""Fixtures shared by every test directory: real servers started once per session."""

from __future__ import annotations

from fixtures.seaweed import seaweed_server

__all__ = ["seaweed_server"]
