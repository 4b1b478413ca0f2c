"""The one Jinja2 environment (autoescaped) of the UI and the few filters templates share.

Times go out as ISO 8601 and sizes as byte counts; static/js/app.js formats them in the
browser's time zone and locale (`<time datetime>`, `data-bytes`, `data-seconds`). Sizes and
durations are also rendered human on the server, with the same rules as app.js, so a page
reads right before (or without) its script and a swapped-in fragment never shows raw bytes.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import jinja2
from fastapi.templating import Jinja2Templates

from e3backup import __version__

WEB_DIR = Path(__file__).parent
TEMPLATE_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"

# Run and command statuses → the badge class (static/css/app.css `.badge-<class>`).
STATUS_CLASS = {
    "success": "success",
    "completed": "success",
    "enabled": "success",
    "online": "success",
    "warning": "partial",
    "partial_success": "partial",
    "failed": "failed",
    "expired": "failed",
    "offline": "failed",
    "cancelled": "cancelled",
    "disabled": "cancelled",
    "running": "running",
    "starting": "running",
    "delivered": "running",
    "queued": "queued",
    "pending": "queued",
}


BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(value: float) -> str:
    """As app.js humanBytes: 512 B, 1.50 KiB, 20.0 GiB, 100 GiB."""
    n, unit = float(value), 0
    while abs(n) >= 1024 and unit < len(BYTE_UNITS) - 1:
        n /= 1024
        unit += 1
    if unit == 0:
        return f"{int(n)} B" if n.is_integer() else f"{n} B"
    places = 2 if n < 10 else 1 if n < 100 else 0
    return f"{n:.{places}f} {BYTE_UNITS[unit]}"


def human_duration(seconds: float) -> str:
    """As app.js humanDuration: 42 s, 3 min 20 s, 2 h 5 min, 1 d 3 h."""
    s = math.floor(float(seconds) + 0.5)  # Math.round: halves go up, not to even
    if s < 60:
        return f"{s} s"
    days, hours, minutes, secs = s // 86400, s % 86400 // 3600, s % 3600 // 60, s % 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" + (f" {secs} s" if secs else "")


def iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def status_class(status: str | None) -> str:
    return STATUS_CLASS.get(status or "", "neutral")


def status_label(status: str | None) -> str:
    return (status or "unknown").replace("_", " ")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        iso=iso,
        status_class=status_class,
        status_label=status_label,
        human_bytes=human_bytes,
        human_duration=human_duration,
    )
    env.globals.update(app_version=__version__)
    return env


templates = Jinja2Templates(env=_environment())
