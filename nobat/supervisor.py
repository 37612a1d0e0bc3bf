"""One supervisor for `nobat serve`'s long-running parts, so that none can die unnoticed.

A part is a coroutine that runs until nobat stops (the dialer, the flow watcher, ...). One
that raises, or returns, is logged with its cause and started again after a backoff that
doubles up to a minute; after `FAILING_AFTER` failures in a row it is reported as failing
(and still restarted). A part may also say that it runs but its work fails (the dialer's
rounds while the store is down): `trouble` reads that. `views()` is what /healthz, the page
and /metrics show.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from clinic.phones import mask_in_text
from db.engine import Clock, one_line, utc_now
from web.status import PartView

log = logging.getLogger(__name__)
FAILING_AFTER = 3
"""Failures in a row after which a part is reported as failing rather than restarting."""
HEALTHY_AFTER_S = 60.0
"""A part that ran this long since its last start has its failures in a row forgotten."""

Trouble = Callable[[], tuple[dt.datetime, str] | None]
"""Since when and why a running part's work fails, or None while it works."""


class PartState(enum.StrEnum):
    """Where a supervised part is in its life."""

    RUNNING = "running"
    RESTARTING = "restarting"
    FAILING = "failing"
    STOPPED = "stopped"


TRANSITIONS: dict[PartState, frozenset[PartState]] = {
    PartState.RUNNING: frozenset({PartState.RESTARTING, PartState.FAILING, PartState.STOPPED}),
    PartState.RESTARTING: frozenset({PartState.RUNNING, PartState.STOPPED}),
    PartState.FAILING: frozenset({PartState.RUNNING, PartState.STOPPED}),
    PartState.STOPPED: frozenset({PartState.RUNNING}),
}
"""The only moves a part's state makes: a crash, a restart, a stop."""


@dataclass(frozen=True)
class Backoff:
    """How long to wait before the n-th restart in a row: doubling from `first` to `most`."""

    first: float = 1.0
    most: float = 60.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` failures in a row (1 or more)."""
        return min(self.most, self.first * 2 ** max(0, failures - 1))


@dataclass
class _Part:
    """One part's coroutine and what the supervisor knows of it."""

    name: str
    run: Callable[[], Awaitable[None]]
    trouble: Trouble | None
    state: PartState
    since: dt.datetime
    last_error: str | None = None
    restarts: int = 0
    failures: int = 0
    task: asyncio.Task[None] | None = None

    def move(self, state: PartState, at: dt.datetime) -> None:
        """Take one transition of the table; anything else is a bug in the supervisor."""
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"{self.name}: no transition from {self.state} to {state}")
        self.state, self.since = state, at


class Supervisor:
    """Starts each part as a task, restarts it when it fails, stops them all in reverse."""

    def __init__(self, clock: Clock = utc_now, backoff: Backoff | None = None, *,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.clock, self.backoff, self.sleep = clock, backoff or Backoff(), sleep
        self._parts: dict[str, _Part] = {}

    def add(self, name: str, run: Callable[[], Awaitable[None]],
            trouble: Trouble | None = None) -> None:
        """Supervise `run` under `name`; it starts now if the supervisor already runs."""
        if name in self._parts:
            raise ValueError(f"a part named {name!r} is already supervised")
        part = _Part(name, run, trouble, PartState.STOPPED, self.clock())
        self._parts[name] = part
        part.task = asyncio.create_task(self._keep(part), name=f"part {name}")

    async def close(self) -> None:
        """Stop every part, the last added first, and wait for each to finish."""
        for part in reversed(list(self._parts.values())):
            if part.task is not None:
                part.task.cancel()
                await asyncio.gather(part.task, return_exceptions=True)
            if part.state is not PartState.STOPPED:
                part.move(PartState.STOPPED, self.clock())

    def views(self) -> list[PartView]:
        """Each part's state for the page: a running part whose work fails shows failing."""
        views = []
        for part in self._parts.values():
            state, since, error = part.state, part.since, part.last_error
            trouble = part.trouble() if part.trouble is not None else None
            if state is PartState.RUNNING and trouble is not None:
                state, (since, error) = PartState.FAILING, trouble
            views.append(PartView(part.name, state.value, since, error, part.restarts))
        return views

    async def _keep(self, part: _Part) -> None:
        """Run the part; on a failure log it, wait out the backoff and run it again."""
        loop = asyncio.get_running_loop()
        while True:
            part.move(PartState.RUNNING, self.clock())
            started = loop.time()
            try:
                await part.run()
                raise RuntimeError("it stopped by itself")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure of a part: log it, restart it
                if loop.time() - started >= HEALTHY_AFTER_S:
                    part.failures = 0
                part.failures += 1
                part.last_error = mask_in_text(one_line(exc))
                delay = self.backoff.delay(part.failures)
                failing = part.failures >= FAILING_AFTER
                part.move(PartState.FAILING if failing else PartState.RESTARTING, self.clock())
                log.error("%s failed (%d in a row); restarting in %.0f s: %s", part.name,
                          part.failures, delay, part.last_error, exc_info=exc)
            await self.sleep(delay)
            part.restarts += 1
