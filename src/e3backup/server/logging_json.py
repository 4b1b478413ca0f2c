"""JSON log lines for the server (one object per line: ts, level, logger, message, and the
exception text when there is one), selected by the `log_json` setting: "auto" (the default)
means JSON when stderr is not a terminal (systemd, CI, a log shipper) and readable plain lines
for a person running `e3backup server` on a terminal; true/false force either."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Literal, TextIO


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def use_json(setting: Literal["auto"] | bool, stream: TextIO | None = None) -> bool:
    """The `log_json` decision: a forced value, or JSON unless `stream` (stderr) is a TTY."""
    if setting != "auto":
        return bool(setting)
    stream = stream if stream is not None else sys.stderr
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced stream: machine output
        return True


def configure(json_lines: bool, level: int = logging.INFO) -> None:
    """Root logging for the server process: JSON or plain lines on stderr."""
    handler = logging.StreamHandler()
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
