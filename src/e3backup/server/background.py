"""The server's background loops (scheduler, watchdog, notification delivery) as daemon
threads sharing one stop event. `LOOPS` is the registry: each entry is a function
`loop(ctx, stop_event)` that returns when the event is set. The app lifespan calls
`start(ctx)` and `stop()`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from e3backup.server.context import ServerContext

log = logging.getLogger(__name__)

Loop = Callable[["ServerContext", threading.Event], None]
LOOPS: dict[str, Loop] = {}
STOP_TIMEOUT_S = 10.0


class Background:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, ctx: ServerContext) -> None:
        if not ctx.settings.background_enabled:
            return
        for name, loop in LOOPS.items():
            thread = threading.Thread(
                target=self._guard, args=(name, loop, ctx), name=f"e3-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _guard(self, name: str, loop: Loop, ctx: ServerContext) -> None:
        try:
            loop(ctx, self._stop)
        except Exception:
            log.exception("background loop %s stopped on an error", name)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(STOP_TIMEOUT_S)
        self._threads.clear()


def start(ctx: ServerContext) -> Background:
    """Start every registered loop; keep the answer to stop them."""
    background = Background()
    background.start(ctx)
    return background
