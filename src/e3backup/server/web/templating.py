"""The one Jinja2 environment (autoescaped) of the UI and the few filters templates share.

Times go out as ISO 8601 and sizes as byte counts; static/js/app.js formats them in the
browser's time zone and locale (`<time datetime>`, `data-bytes`, `data-seconds`).
"""

from __future__ import annotations

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
    env.filters.update(iso=iso, status_class=status_class, status_label=status_label)
    env.globals.update(app_version=__version__)
    return env


templates = Jinja2Templates(env=_environment())
