"""The dialer: due consultations and patient calls become calls through AMI, exactly once.

The database decides what is due (`ConsultationStore.claim_next`, then
`PatientCallStore.claim_next`), not a job store: a loop asks it when a timer set for a due
time fires (bridge/due_planning.py; rebuilt from the store at start and refreshed each
round), when a call frees its place, and every `poll` seconds, up to the cap of simultaneous
channels (bridge/call_capacity.py), consultations first, oldest first. Each claim runs a
`ConsultationCall` (bridge/consultation_call.py) or a `PatientCallAttempt` (bridge/patient_call.py,
a reminder, absence call or survey whose flow runs over FastAGI) in its own task: a runner
(bridge/call_runner.py) carries out its effects in order, writing every `Record` to the
store (bridge/call_jobs.py) before the next action goes to Asterisk, and is fed the AMI
events of that call alone (bridge/call_routing.py).

    dialer = Dialer(store, ami, lambda claim: plan, "nobat-1", RetryPolicy(), Tuning(cap=8))
    task = asyncio.create_task(dialer.run())
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from bridge.ami_client import AmiClient, AmiError, LinkState
from bridge.call_capacity import Capacity, running
from bridge.call_jobs import ConsultationJob, Job, PatientCallJob
from bridge.call_routing import CallInboxes, CallKey
from bridge.call_runner import CallContext, Sleep, run_call
from bridge.consultation_call import ConsultationCall
from bridge.due_planning import DuePlanning, PracticesLeftOut
from bridge.due_timers import DueTimers
from bridge.outbound import OutboundCall, PlanFactory
from bridge.patient_call import PatientCallAttempt, PatientCalls
from clinic.call_kinds import CallKind
from clinic.phones import mask_in_text
from db.consultations import Claim, ConsultationStore, RetryPolicy
from db.engine import Clock, one_line, utc_now
from db.patient_calls import PatientCallClaim, Plan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tuning:
    """How much one dialer rings at once and how it keeps time (config.toml [consultations])."""

    cap: int
    """Outbound channels its calls hold or ring at once (so also the Originates in flight)."""
    poll: float = 5.0
    """Seconds between looks at the store when no timer fires and no call ends."""
    lease: dt.timedelta = dt.timedelta(minutes=1)
    """How long a claim is this instance's without a renewal."""
    missed_grace: dt.timedelta = dt.timedelta(minutes=5)
    """A consultation this late is missed, not dialled (at start, or given back)."""
    reconnect_wait: float = 30.0
    """Seconds a call waits for a lost AMI link before it decides without Asterisk."""
    link_check: float = 1.0
    """Seconds between a call's looks at its lease and the AMI link while no event comes."""
    timer_horizon: dt.timedelta = dt.timedelta(days=1)
    """How far ahead timers are set for due times."""
    practice_share: float = 1.0
    """The part of `cap` one practice's calls may hold when several share the line."""


class Work(enum.Enum):
    """What the dialer does that fails on its own, with what the log says of it failing and
    of it working again."""

    ROUNDS = ("a round of the dialer failed", "the dialer's rounds work again")
    PLANNING = ("planning patient calls failed", "planning patient calls works again")


async def dial_and_plan(dialer: Dialer) -> None:
    """The dialer's rounds and its planning together, unsupervised (benches and tests);
    `nobat serve` supervises each as a part of its own."""
    await asyncio.gather(dialer.run(), dialer.plan())


class Dialer:
    """Claims due consultations for one nobat instance and runs each as a call, within
    `tuning.cap` outbound channels."""

    def __init__(
        self,
        store: ConsultationStore,
        ami: AmiClient,
        plan_for: PlanFactory,
        instance: str,
        retry: RetryPolicy,
        tuning: Tuning,
        clock: Clock = utc_now,
        *,
        sleep: Sleep = asyncio.sleep,
        patient_calls: PatientCalls | None = None,
    ) -> None:
        self.store, self.ami, self.plan_for = store, ami, plan_for
        self.instance, self.retry, self.tuning, self.clock = instance, retry, tuning, clock
        self.patient_calls = patient_calls
        self.capacity = Capacity(tuning.cap, patient_calls.max_calls if patient_calls else 0,
                                 tuning.practice_share)
        self.context = CallContext(ami, clock, sleep, tuning.link_check, tuning.reconnect_wait)
        self.calls: dict[CallKey, asyncio.Task[str]] = {}
        """Calls in progress, by kind and id."""
        self.practice_of: dict[CallKey, int] = {}
        """The practice (clinic id) of each call in progress, for its share of the cap."""
        self.on_dispatch: list[Callable[[Claim, dt.timedelta], None]] = []
        """Told of each consultation as it starts, with how late it is (the metrics' lag
        histogram)."""
        self._wake = asyncio.Event()
        self.timers = DueTimers(self._wake.set, clock)
        self.planning = DuePlanning(store, patient_calls, self.timers, clock,
                                    tuning.timer_horizon, tuning.poll)
        self.inboxes = CallInboxes(ami.subscribe)
        self._troubles: dict[Work, tuple[dt.datetime, str]] = {}
        """Since when and why its rounds, or its planning of patient calls, fail."""

    @property
    def trouble(self) -> tuple[dt.datetime, str] | None:
        """Since when and why its rounds fail (the store or AMI away, a bug), or None."""
        return self._troubles.get(Work.ROUNDS)

    @property
    def planning_trouble(self) -> tuple[dt.datetime, str] | None:
        """Since when and why planning patient calls fails, or None."""
        return self._troubles.get(Work.PLANNING)

    async def run(self) -> None:
        """Sweep what was missed while nobat was down, set the timers, then claim what is
        due, forever. A sweep that fails raises (the supervisor runs this again); a round
        that fails, for whatever reason, is logged and reported in `trouble`, and the next
        round runs."""
        missed = await self.store.sweep_missed(self.clock(), self.tuning.missed_grace)
        if missed:
            log.warning("%d consultations were due while nobat was down: marked missed",
                        len(missed))
        self.timers.start()
        while True:
            self._wake.clear()
            try:
                await self.dial_due()
                await self.planning.refresh_timers()
            except Exception as exc:  # any round's failure: reported, the next one runs
                self._failed(Work.ROUNDS, exc, self.tuning.poll)
            else:
                self._worked(Work.ROUNDS)
            await self._pause()

    async def plan(self) -> None:
        """Plan patient calls each time they are due to be planned, forever, beside `run`
        (`nobat serve` supervises it as a part of its own): a round that claims never
        waits for every practice's reminders to be planned, nor for a plan that fails.
        What a plan adds wakes a round to claim it; a plan that fails, or leaves out a
        practice whose row cannot be read, is logged and reported in `planning_trouble`
        until one works whole. Without calls to patients there is nothing to plan, and it
        returns."""
        if (desk := self.patient_calls) is None:
            return
        while True:
            try:
                plan = await self.planning.plan_patient_calls()
            except Exception as exc:  # a failed plan: reported, the next one runs
                self._failed(Work.PLANNING, exc, desk.plan_every)
            else:
                if plan is not None:
                    self._planned(plan, desk.plan_every)
            await self.context.sleep(self.tuning.poll)

    def _planned(self, plan: Plan, next_in: float) -> None:
        """Wake a round for what a plan added; report the practices it left out, or that
        planning works again."""
        if plan.unreadable:
            self._failed(Work.PLANNING, PracticesLeftOut(plan.unreadable), next_in)
        else:
            self._worked(Work.PLANNING)
        if plan.added:
            self._wake.set()

    async def _pause(self) -> None:
        """Until the next round: `poll` seconds, or sooner when woken."""
        pause = asyncio.ensure_future(self.context.sleep(self.tuning.poll))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({pause, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            pause.cancel()
            woken.cancel()

    def _failed(self, work: Work, exc: Exception, next_in: float) -> None:
        """Log a failed round or plan (its traceback only when it is not the store or AMI
        away) and keep since when it fails."""
        error = mask_in_text(one_line(exc))
        since = self._troubles[work][0] if work in self._troubles else self.clock()
        self._troubles[work] = (since, error)
        expected = isinstance(exc, (AmiError, SQLAlchemyError, PracticesLeftOut))
        log.error("%s; the next one in %g s at most: %s", work.value[0], next_in,
                  error, exc_info=None if expected else exc)

    def _worked(self, work: Work) -> None:
        """Forget a failing round or plan once it works, and say so."""
        if self._troubles.pop(work, None) is not None:
            log.info(work.value[1])

    async def dial_due(self) -> list[Claim | PatientCallClaim]:
        """Claim as many due calls as the channel cap leaves room for and start them:
        consultations first (a doctor is waiting on the clock), then calls to patients."""
        capacity = self.capacity
        if capacity.free(self.calls) <= 0 or self.ami.status.state is not LinkState.CONNECTED:
            return []
        claims = await self.store.claim_next(
            self.instance, self.tuning.lease, capacity.room(CallKind.CONSULTATION, self.calls),
            running=running(CallKind.CONSULTATION, self.calls),
            room=self._practice_room(CallKind.CONSULTATION))
        now = self.clock()
        failed: Exception | None = None
        started: list[Claim | PatientCallClaim] = []
        for claim in claims:
            try:
                call = ConsultationCall(claim, self.plan_for(claim), self.retry)
            except Exception as exc:  # give it back: the others are dialled all the same
                await self.store.abandon(claim)
                failed = failed or exc
                continue
            for listener in self.on_dispatch if not claim.taken_over else ():
                listener(claim, now - claim.consultation.due_at)  # how late it was rung
            self._start(ConsultationJob(self.store, claim, self.tuning.missed_grace), call)
            started.append(claim)
        desk = self.patient_calls
        room = capacity.room(CallKind.PATIENT_CALL, self.calls)
        if desk is not None and room > 0:
            mine = running(CallKind.PATIENT_CALL, self.calls)
            for patient in await desk.store.claim_next(
                    self.instance, self.tuning.lease, room, mine,
                    room=self._practice_room(CallKind.PATIENT_CALL), planning=desk.planning):
                call = PatientCallAttempt(patient, desk.plan_for(patient), desk.retry)
                self._start(PatientCallJob(desk.store, patient, call), call)
                started.append(patient)
        if failed is not None:
            raise failed  # the round is reported failing, with what went wrong
        return started

    def _practice_room(self, kind: CallKind) -> Callable[[int, int | None], int]:
        """How many more calls of `kind` each practice may start now, by its clinic id and
        its own cap."""
        return lambda clinic, own_cap: self.capacity.practice_room(
            kind, [key for key, theirs in self.practice_of.items() if theirs == clinic], own_cap)

    def _start(self, job: Job, call: OutboundCall) -> None:
        key = (job.claim.kind, job.claim.ident)
        self.practice_of[key] = job.claim.practice.id
        task = asyncio.create_task(self._call(key, job, call), name=job.name)
        self.calls[key] = task
        task.add_done_callback(lambda done: self._finished(key, job.name, done))

    async def _call(self, key: CallKey, job: Job, call: OutboundCall) -> str:
        """Run one attempt with its own inbox of AMI events; returns its outcome."""
        with self.inboxes.open(key) as inbox:
            return await run_call(self.context, job, call, inbox)

    async def close(self) -> None:
        """Stop every call: consultations are handed to the next nobat as they are, calls to
        patients hung up and given back."""
        self.timers.close()
        tasks = list(self.calls.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.inboxes.close()

    def _finished(self, key: CallKey, name: str, task: asyncio.Task[str]) -> None:
        """Free the call's place under the cap, and say why if it crashed."""
        self.calls.pop(key, None)
        self.practice_of.pop(key, None)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: the call crashed", name, exc_info=task.exception())
        elif not task.cancelled():
            log.info("%s: %s", name, task.result())
