"""What falls due, kept in view of the dialer: the patient calls to plan, and a timer at
each time a call falls due (bridge/due_timers.py), so it is claimed on the dot."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from bridge.due_timers import DueTimers
from bridge.patient_call import PatientCalls
from db.consultations import ConsultationStore
from db.engine import Clock
from db.patient_calls import Plan
from db.unreadable import Unreadable, named

log = logging.getLogger(__name__)


class PracticesLeftOut(Exception):
    """A plan that planned every practice's patient calls but those of the practices whose
    stored times cannot be read."""

    def __init__(self, unreadable: tuple[Unreadable, ...]) -> None:
        super().__init__(f"practices left out, their patients not rung until their rows are "
                         f"put right ({len(unreadable)}): {named(unreadable)}")


TIMER_BATCH = 500
"""Timers set between two turns of the event loop."""


def loop_time() -> float:
    """The running event loop's clock, in seconds."""
    return asyncio.get_running_loop().time()


class Cadence:
    """Work done every `every` seconds at most: the dialer's loop also turns whenever a call
    ends, which needs neither planning nor new timers."""

    def __init__(self, every: float, now: Callable[[], float] = loop_time) -> None:
        self.every, self.now = every, now
        self._last: float | None = None

    def due(self) -> bool:
        """Whether `every` seconds have passed since the work was last done (or it never
        was); if so it counts as done now."""
        now = self.now()
        if self._last is not None and now - self._last < self.every:
            return False
        self._last = now
        return True


class DuePlanning:
    """Plans patient calls every `plan_every` seconds and sets the timers from both stores'
    due times every `poll` seconds; a booking made by any instance is seen within one poll."""

    def __init__(self, store: ConsultationStore, patient_calls: PatientCalls | None,
                 timers: DueTimers, clock: Clock, horizon: dt.timedelta, poll: float,
                 now: Callable[[], float] = loop_time) -> None:
        self.store, self.patient_calls, self.timers = store, patient_calls, timers
        self.clock, self.horizon = clock, horizon
        self._timers_due = Cadence(poll, now)
        self._planning_due = Cadence(patient_calls.plan_every if patient_calls else 0.0, now)

    async def plan_patient_calls(self) -> Plan | None:
        """When `plan_every` seconds have passed, add the reminders, absence calls and
        surveys now due; what it added and left out, or None when no plan was due."""
        desk = self.patient_calls
        if desk is None or not self._planning_due.due():
            return None
        plan = await desk.store.plan(desk.planning)
        if plan.added:
            log.info("planned patient calls: %s",
                     ", ".join(f"{n} {purpose}" for purpose, n in plan.added.items()))
        return plan

    async def refresh_timers(self) -> None:
        """When `poll` seconds have passed, set the timers of due times not seen before."""
        if self._timers_due.due() and (added := await self.set_timers()):
            log.info("timers set for %d more due times", added)

    async def set_timers(self) -> int:
        """A timer for each time a call falls due within the horizon; returns how many were
        added."""
        now = self.clock()
        until = now + self.horizon
        times = await self.store.due_times(now, until)
        if self.patient_calls is not None:
            times += await self.patient_calls.store.due_times(now, until)
        added = 0
        for first in range(0, len(times), TIMER_BATCH):
            added += self.timers.set(times[first:first + TIMER_BATCH])
            await asyncio.sleep(0)  # calls in progress go on while thousands are set
        return added
