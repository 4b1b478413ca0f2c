"""The CLI's output layer: the only place that prints. Rich for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from e3backup.engines.progress import Progress as EngineProgress
from e3backup.engines.progress import ProgressCallback

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def error(message: str) -> None:
    # One line however long (no wrapping at the console width), and the message is text, not
    # markup: "[offset, length]" must survive.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


@contextmanager
def progress_bar(label: str, enabled: bool) -> Iterator[ProgressCallback | None]:
    """A live bar on stderr when it is a terminal; yields the engine callback (or None)."""
    if not enabled or not err_console.is_terminal:
        yield None
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    task = bar.add_task(label, total=None)

    def update(p: EngineProgress) -> None:
        bar.update(task, total=p.bytes_total, completed=p.bytes_processed)

    with bar:
        yield update
