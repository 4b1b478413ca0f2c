"""The server's background loops (scheduler, watchdog, notification delivery) as daemon
threads sharing one stop event. `LOOPS` is the registry: each entry is a function
`loop(ctx, stop_event)` that returns when the event is set. The app lifespan calls
`start(ctx)` and `stop()`.

Each pass runs in its own transaction; an exception is logged and the loop carries on at its
next tick (a database hiccup must not silently end scheduling). Every pass is safe on several
replicas at once (see the services), so nothing here coordinates between servers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from e3backup.server.db.engine import session_scope
from e3backup.server.notify import SmtpConfig
from e3backup.server.services import notifications, scheduler, watchdog
from e3backup.server.services.agent_gate import LAST_SEEN_FLUSH_S

if TYPE_CHECKING:
    from e3backup.server.context import ServerContext

log = logging.getLogger(__name__)

Loop = Callable[["ServerContext", threading.Event], None]
STOP_TIMEOUT_S = 10.0
NOTIFY_TICK_S = 10.0


def scheduler_pass(ctx: ServerContext) -> scheduler.TickReport:
    with session_scope(ctx.sessions) as db:
        return scheduler.tick(db, ctx.settings.agent_online_window_s)


def watchdog_pass(ctx: ServerContext) -> watchdog.WatchdogReport:
    with session_scope(ctx.sessions) as db:
        return watchdog.tick(
            db, ctx.settings.agent_watchdog_timeout_s, ctx.settings.cancel_timeout_s
        )


def notification_pass(ctx: ServerContext) -> notifications.DeliveryReport:
    smtp = SmtpConfig.from_settings(ctx.settings)
    allow = ctx.settings.notify_allow_private_targets
    return notifications.deliver_due(ctx.sessions, ctx.box, smtp, allow_private_targets=allow)


def every(
    name: str, interval_s: Callable[[ServerContext], float], step: Callable[[ServerContext], object]
) -> Loop:
    """A loop running `step(ctx)` every `interval_s(ctx)` seconds until stopped."""

    def loop(ctx: ServerContext, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                step(ctx)
            except Exception:  # keep the loop alive; the next tick retries
                log.exception("background %s pass failed", name)
            stop.wait(interval_s(ctx))

    return loop


def last_seen_pass(ctx: ServerContext) -> int:
    return ctx.gate.flush_last_seen()


# Always running, also with background_enabled off: agents' last_seen depends on it.
ESSENTIAL_LOOPS: dict[str, Loop] = {
    "last_seen": every("last_seen", lambda ctx: LAST_SEEN_FLUSH_S, last_seen_pass),
}
LOOPS: dict[str, Loop] = {
    "scheduler": every("scheduler", lambda ctx: ctx.settings.scheduler_tick_s, scheduler_pass),
    "watchdog": every("watchdog", lambda ctx: ctx.settings.watchdog_tick_s, watchdog_pass),
    "notify": every("notify", lambda ctx: NOTIFY_TICK_S, notification_pass),
}


class Background:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, ctx: ServerContext) -> None:
        loops = dict(ESSENTIAL_LOOPS)
        if ctx.settings.background_enabled:
            loops |= LOOPS
        for name, loop in loops.items():
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
