"""Byte and rate formatting / parsing for humans."""

from __future__ import annotations

import re

_SUFFIXES = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def format_bytes(size_bytes: float) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def parse_size(text: str) -> int:
    """'256K', '1MiB', '4g', '65536' -> bytes (binary multiples)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 65536, 256K, 1M)")
    return int(match.group(1)) * _SUFFIXES[match.group(2)]


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """'90s', '30m', '24h', '7d', '2w', '3600' -> seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", text.lower())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"not a duration: {text!r} (examples: 30m, 24h, 7d)")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
