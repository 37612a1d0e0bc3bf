"""Timers that wake the dialer the moment a call falls due; the store still decides what is due.

One APScheduler date job per distinct due time (not per call: a clinic's visits share slot
boundaries, so 100,000 consultations need a few thousand timers). A timer only wakes the
dialer, which then claims in the store, so a timer set twice, fired late or lost costs
nothing but the wait for the next poll.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

from apscheduler.schedulers.asyncio import AsyncIOScheduler


class DueTimers:
    """Pending wake-ups, each at a due time still ahead."""

    def __init__(self, wake: Callable[[], None], clock: Callable[[], dt.datetime]) -> None:
        self.wake, self.clock = wake, clock
        self.pending: set[dt.datetime] = set()
        self._scheduler = AsyncIOScheduler(timezone=dt.UTC,
                                           job_defaults={"misfire_grace_time": None})

    def start(self) -> None:
        """Run the timers on the running event loop."""
        if not self._scheduler.running:
            self._scheduler.start()

    def set(self, times: Iterable[dt.datetime]) -> int:
        """Add a timer for each time ahead that has none yet; returns how many were added."""
        now = self.clock()
        added = 0
        for at in times:
            if at <= now or at in self.pending:
                continue
            self.pending.add(at)
            self._scheduler.add_job(self._fire, "date", run_date=at, args=(at,))
            added += 1
        return added

    async def _fire(self, at: dt.datetime) -> None:
        self.pending.discard(at)
        self.wake()

    def close(self) -> None:
        """Drop every pending timer (nobat is stopping)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self.pending.clear()
