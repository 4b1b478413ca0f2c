"""`e3backup demo`: a guided round trip on embedded defaults (placeholder, see below)."""

from __future__ import annotations

import typer


def demo(ctx: typer.Context) -> None:
    """Guided round trip: sample disk → backup → 1 % change → backup → restore both → verify."""
    raise typer.Exit(0)
