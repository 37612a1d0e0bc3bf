"""The dialer: due consultations and patient calls become calls through AMI, exactly once.

The database decides what is due (`ConsultationStore.claim_next`, then
`PatientCallStore.claim_next`), not a job store: a loop asks it when a timer set for a due
time fires (bridge/due_timers.py; rebuilt from the store at start and refreshed each round),
when a call frees its place, and every `poll` seconds, up to the cap of simultaneous
channels, consultations first, oldest first. Each claim runs a
`ConsultationCall` (bridge/consultation_call.py) or a `PatientCallAttempt` (bridge/patient_call.py,
a reminder, absence call or survey whose flow runs over FastAGI); the dialer carries out
its effects in order, writing every `Record` to the store before the next action goes to
Asterisk. An action is never re-sent: when the AMI link drops, the dialer waits for it,
looks at the live channels (CoreShowChannels) and lets the call decide from what it sees.

    dialer = Dialer(store, ami, lambda claim: plan, instance="nobat-1", cap=8,
                    retry=RetryPolicy())
    task = asyncio.create_task(dialer.run())
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from bridge.ami_client import AmiClient, AmiError, LinkState
from bridge.ami_protocol import Action, Event, Fields
from bridge.consultation_call import ConsultationCall
from bridge.due_timers import DueTimers
from bridge.live_channels import READY_VARIABLE, LiveChannel
from bridge.outbound import (
    CallPlan,
    Done,
    Effect,
    OutboundCall,
    Record,
    RecordKind,
    SendAction,
    Wake,
    hangup,
)
from bridge.patient_call import PatientCallAttempt, RetryRule
from clinic.call_kinds import CallKind, call_ref
from clinic.phones import mask_in_text
from db.consultations import (
    CUT_CAUSE,
    DOWN_CAUSE,
    Claim,
    ConsultationStore,
    RetryPolicy,
)
from db.engine import Clock, one_line, utc_now
from db.leases import ClaimLost, LeasedClaim
from db.patient_calls import (
    STOPPED_CAUSE,
    CallPlanning,
    PatientCallClaim,
    PatientCallStore,
)

log = logging.getLogger(__name__)

PlanFactory = Callable[[Claim], CallPlan]
TIMER_BATCH = 500
"""Timers set between two turns of the event loop."""
CallKey = tuple[CallKind, int]
"""A call in progress: its kind and its row's id."""
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class PatientCalls:
    """Reminders, absence calls and surveys: what to plan, how to ring, when to retry."""

    store: PatientCallStore
    planning: CallPlanning
    plan: CallPlan
    retry: RetryRule
    plan_every: float = 60.0
    """Seconds between looks for calls to plan (bookings made, closures recorded)."""
    max_calls: int = 20
    """Patient calls at once, within the dialer's cap: the rest stays for consultations."""


class Dialer:
    """Claims due consultations for one nobat instance and runs each as a call; `cap` bounds
    the outbound channels its calls hold at once (so also the Originates in flight)."""

    def __init__(
        self,
        store: ConsultationStore,
        ami: AmiClient,
        plan_for: PlanFactory,
        instance: str,
        cap: int,
        retry: RetryPolicy,
        clock: Clock = utc_now,
        *,
        sleep: Sleep = asyncio.sleep,
        poll: float = 5.0,
        lease: dt.timedelta = dt.timedelta(minutes=1),
        missed_grace: dt.timedelta = dt.timedelta(minutes=5),
        reconnect_wait: float = 30.0,
        link_check: float = 1.0,
        patient_calls: PatientCalls | None = None,
        timer_horizon: dt.timedelta = dt.timedelta(days=1),
    ) -> None:
        self.store, self.ami, self.plan_for = store, ami, plan_for
        self.instance, self.cap, self.retry = instance, cap, retry
        self.clock, self.sleep = clock, sleep
        self.poll, self.lease, self.missed_grace = poll, lease, missed_grace
        self.reconnect_wait, self.link_check = reconnect_wait, link_check
        self.patient_calls, self.timer_horizon = patient_calls, timer_horizon
        self.calls: dict[CallKey, asyncio.Task[str]] = {}
        """Calls in progress, by kind and id."""
        self.on_dispatch: list[Callable[[Claim, dt.timedelta], None]] = []
        """Told of each consultation as it starts, with how late it is (the metrics' lag
        histogram)."""
        self._wake = asyncio.Event()
        self.timers = DueTimers(self._wake.set, clock)
        self._inboxes: dict[CallKey, asyncio.Queue[Event | dt.datetime]] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._last_done: dict[str, float] = {}
        self.trouble: tuple[dt.datetime, str] | None = None
        """Since when and why its rounds fail (the store or AMI away, a bug), or None."""

    def _route(self, event: Event) -> None:
        """Hand an AMI event to the one call it concerns (by its ids), not to every call."""
        fields = event.fields
        key: CallKey | None = None
        for name in ("ActionID", "Uniqueid", "Linkedid"):
            found = call_ref(fields.get(name))
            if found is not None:
                key = (found.kind, found.ident)
                break
        else:  # the dialplan's UserEvent NobatLegReady names its consultation
            consultation = fields.get("Consultation") or ""
            key = (CallKind.CONSULTATION, int(consultation)) if consultation.isdigit() else None
        inbox = self._inboxes.get(key) if key is not None else None
        if inbox is not None:
            inbox.put_nowait(event)

    async def run(self) -> None:
        """Sweep what was missed while nobat was down, set the timers, then claim what is
        due, forever. A sweep that fails raises (the supervisor runs this again); a round
        that fails, for whatever reason, is logged and reported in `trouble`, and the next
        round runs."""
        missed = await self.store.sweep_missed(self.clock(), self.missed_grace)
        if missed:
            log.warning("%d consultations were due while nobat was down: marked missed",
                        len(missed))
        self.timers.start()
        while True:
            self._wake.clear()
            try:
                await self.plan_patient_calls()
                await self.dial_due()
                if self._time_for("timers", self.poll) and (added := await self.set_timers()):
                    log.info("timers set for %d more due times", added)
            except Exception as exc:  # any round's failure: reported, and the next round runs
                self._round_failed(exc)
            else:
                if self.trouble is not None:
                    log.info("the dialer's rounds work again")
                self.trouble = None
            pause = asyncio.ensure_future(self.sleep(self.poll))
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({pause, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                pause.cancel()
                woken.cancel()

    def _round_failed(self, exc: Exception) -> None:
        """Log a failed round (its traceback only when it is not the store or AMI away) and
        keep since when the rounds fail."""
        error = mask_in_text(one_line(exc))
        since = self.trouble[0] if self.trouble is not None else self.clock()
        self.trouble = (since, error)
        expected = isinstance(exc, (AmiError, SQLAlchemyError))
        log.error("a round of the dialer failed; the next one in %g s at most: %s", self.poll,
                  error, exc_info=None if expected else exc)

    async def set_timers(self) -> int:
        """A timer for each time a call falls due within the horizon, so it is claimed on the
        dot; a booking made by any instance is seen within one round."""
        now = self.clock()
        until = now + self.timer_horizon
        times = await self.store.due_times(now, until)
        if self.patient_calls is not None:
            times += await self.patient_calls.store.due_times(now, until)
        added = 0
        for first in range(0, len(times), TIMER_BATCH):
            added += self.timers.set(times[first:first + TIMER_BATCH])
            await asyncio.sleep(0)  # calls in progress go on while thousands are set
        return added

    async def plan_patient_calls(self) -> None:
        """Every `plan_every` seconds, add the reminders, absence calls and surveys now due."""
        desk = self.patient_calls
        if desk is None or not self._time_for("plan", desk.plan_every):
            return
        planned = await desk.store.plan(desk.planning)
        if planned:
            log.info("planned patient calls: %s",
                     ", ".join(f"{n} {purpose}" for purpose, n in planned.items()))

    def _time_for(self, work: str, every: float) -> bool:
        """Whether `every` seconds have passed since `work` was last done (then it is due
        now): the loop also turns whenever a call ends, which needs neither."""
        now = asyncio.get_running_loop().time()
        last = self._last_done.get(work)
        if last is not None and now - last < every:
            return False
        self._last_done[work] = now
        return True

    def channels(self) -> int:
        """Outbound channels this instance's calls hold or ring: what the cap counts (two per
        consultation, one per patient call)."""
        return sum(kind.channels for kind, _ in self.calls)

    async def dial_due(self) -> list[Claim | PatientCallClaim]:
        """Claim as many due calls as the channel cap leaves room for and start them:
        consultations first (a doctor is waiting on the clock), then calls to patients."""
        if self.cap - self.channels() <= 0 or self.ami.status.state is not LinkState.CONNECTED:
            return []
        running = self._running(CallKind.CONSULTATION)
        free = (self.cap - self.channels()) // CallKind.CONSULTATION.channels
        claims = await self.store.claim_next(self.instance, self.lease, free, running=running)
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
            self._start(_Consultation(self.store, claim, call, self.missed_grace), call)
            started.append(claim)
        desk = self.patient_calls
        mine = self._running(CallKind.PATIENT_CALL)
        room = min(self.cap - self.channels(), desk.max_calls - len(mine)) if desk else 0
        if desk is not None and room > 0:
            for patient in await desk.store.claim_next(self.instance, self.lease, room, mine):
                call = PatientCallAttempt(patient, desk.plan, desk.retry)
                self._start(_Patient(desk.store, patient, call), call)
                started.append(patient)
        if failed is not None:
            raise failed  # the round is reported failing, with what went wrong
        return started

    def _running(self, kind: CallKind) -> set[int]:
        """The ids of this instance's calls of `kind` in progress."""
        return {ident for running, ident in self.calls if running is kind}

    def _start(self, job: _Job, call: OutboundCall) -> None:
        key = (job.claim.kind, job.claim.ident)
        task = asyncio.create_task(self._call(key, job, call), name=job.name)
        self.calls[key] = task
        task.add_done_callback(lambda done: self._finished(key, job.name, done))

    async def close(self) -> None:
        """Stop every call: consultations are handed to the next nobat as they are, calls to
        patients hung up and given back."""
        self.timers.close()
        tasks = list(self.calls.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _finished(self, key: CallKey, name: str, task: asyncio.Task[str]) -> None:
        """Free the call's place under the cap, and say why if it crashed."""
        self.calls.pop(key, None)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: the call crashed", name, exc_info=task.exception())
        elif not task.cancelled():
            log.info("%s: %s", name, task.result())

    # -- one call ----------------------------------------------------------------------

    async def _call(self, key: CallKey, job: _Job, call: OutboundCall) -> str:
        """Run one attempt from Originate to Done; returns its outcome."""
        inbox: asyncio.Queue[Event | dt.datetime] = asyncio.Queue()
        self._inboxes[key] = inbox  # before Originate: see its answer
        if self._unsubscribe is None:
            self._unsubscribe = self.ami.subscribe(self._route)
        runner = _Runner(self, call, job, inbox)
        try:
            if job.earlier_channels() and not await runner.clear_leftovers():
                with contextlib.suppress(ClaimLost):
                    await job.given_back()
                return "given back: Asterisk could not list its channels before a redial"
            return await runner.run()
        except asyncio.CancelledError:
            await asyncio.shield(runner.give_back())
            raise
        finally:
            self._inboxes.pop(key, None)
            runner.stop_timers()


class _Job(Protocol):
    """One claimed attempt as the runner stores it: consultation or patient call."""

    name: str

    @property
    def claim(self) -> LeasedClaim: ...
    @property
    def takes_over(self) -> bool: ...
    @property
    def seen_until(self) -> dt.datetime | None: ...
    def earlier_channels(self) -> set[str]: ...
    async def write(self, record: Record) -> None: ...
    async def renew(self) -> None: ...
    async def hand_over(self) -> bool: ...
    async def given_back(self) -> None: ...


class _Consultation:
    """A consultation attempt's steps in the ConsultationStore."""

    def __init__(self, store: ConsultationStore, claim: Claim, call: ConsultationCall,
                 missed_grace: dt.timedelta) -> None:
        self.store, self.claim, self.call = store, claim, call
        self.missed_grace = missed_grace
        """A call given back later than this after its time is missed, not dialled."""
        self.name = f"consultation {claim.ident}"

    @property
    def takes_over(self) -> bool:
        return self.claim.taken_over

    @property
    def seen_until(self) -> dt.datetime | None:
        """At a takeover: about when the stopped instance last saw the attempt."""
        return self.claim.seen_until

    def earlier_channels(self) -> set[str]:
        """Channels earlier attempts may have left up (after an AMI fault or a crash)."""
        claim = self.claim
        earlier = {claim.kind.channel_id(claim.ident, n, leg)
                   for n in range(1, claim.attempt) for leg in claim.kind.legs}
        return earlier | {f"{c}-2" for c in earlier}

    async def write(self, record: Record) -> None:
        store, claim = self.store, self.claim
        if record.kind is RecordKind.LEG_ANSWERED:
            assert record.leg is not None
            await store.leg_answered(claim, record.leg, record.at)
        elif record.kind is RecordKind.BRIDGED:
            await store.bridged(claim, record.at)
        elif record.kind is RecordKind.COMPLETED:
            await store.completed(claim, record.at, record.talk_seconds, record.cause)
        elif record.kind is RecordKind.RESUMED:
            log.warning("consultation %s attempt %d resumed from Asterisk's channels after %s s "
                        "unseen", claim.ident, claim.attempt, record.unseen_seconds)
            await store.resumed(claim, record.unseen_seconds or 0)
        elif record.kind is RecordKind.GIVEN_BACK:
            late = record.at - claim.consultation.due_at > self.missed_grace
            log.warning("consultation %s attempt %d taken over with no leg left in Asterisk: "
                        "%s", claim.ident, claim.attempt,
                        "missed, too late to ring" if late else "given back, due again")
            if late:
                await store.attempt_failed(claim, DOWN_CAUSE, {}, None, record.at)
            else:
                await store.abandon(claim)
        elif record.kind is RecordKind.CUT:
            log.warning("consultation %s attempt %d cut after %s s (%s); %s",
                        claim.ident, claim.attempt, record.talk_seconds, record.cause,
                        "ringing both again" if record.retry_at else "no time left")
            await store.cut(claim, record.at, record.talk_seconds or 0, record.retry_at,
                            record.cause or CUT_CAUSE)
        else:
            log.info("consultation %s attempt %d failed (%s); next try %s",
                     claim.ident, claim.attempt, record.cause, record.retry_at)
            await store.attempt_failed(claim, record.cause or "failed", record.leg_causes,
                                       record.retry_at, record.at)

    async def renew(self) -> None:
        self.claim = await self.store.renew(self.claim)

    async def hand_over(self) -> bool:
        """On shutdown (a deploy, a restart) nothing is hung up: the lease ends now, so the
        next nobat takes the attempt over at once from Asterisk's channels (a bridged call
        Asterisk ends on time in any case)."""
        await self.store.hand_over(self.claim)
        return True

    async def given_back(self) -> None:
        await self.store.abandon(self.claim)


class _Patient:
    """A patient call attempt's steps in the PatientCallStore."""

    def __init__(self, store: PatientCallStore, claim: PatientCallClaim, call: PatientCallAttempt
                 ) -> None:
        self.store, self.claim, self.call = store, claim, call
        self.name = f"{claim.call.purpose} call {claim.ident}"

    @property
    def takes_over(self) -> bool:
        return False

    @property
    def seen_until(self) -> dt.datetime | None:
        return None

    def earlier_channels(self) -> set[str]:
        return set()

    async def write(self, record: Record) -> None:
        store, claim = self.store, self.claim
        if record.kind is RecordKind.LEG_ANSWERED:
            await store.answered(claim, record.at)
        elif record.kind is RecordKind.COMPLETED:
            await store.finished(claim, record.cause)
        else:
            log.info("%s attempt %d not answered (%s); next try %s", self.name,
                     claim.attempt, record.cause, record.retry_at)
            await store.attempt_failed(claim, record.cause or "failed", record.retry_at)

    async def renew(self) -> None:
        self.claim = await self.store.renew(self.claim)

    async def hand_over(self) -> bool:
        """On shutdown the call is hung up and given back: its flow runs in this nobat."""
        return False

    async def given_back(self) -> None:
        """Answered: it is over (never rung again); not answered: due again at once."""
        if self.call.answered:
            await self.store.finished(self.claim, STOPPED_CAUSE)
        else:
            await self.store.abandon(self.claim)


class _Runner:
    """Carries out one ConsultationCall's effects and feeds it events, time and link loss."""

    def __init__(self, dialer: Dialer, call: OutboundCall, job: _Job,
                 inbox: asyncio.Queue[Event | dt.datetime]) -> None:
        self.dialer, self.call, self.job, self.inbox = dialer, call, job, inbox
        self.outcome: str | None = None
        self.timers: set[asyncio.Task[None]] = set()
        self.link = dialer.ami.status.connected_since
        self.boots = dialer.ami.boots
        self.lost_at: dt.datetime | None = None
        """When this call first saw the AMI link down: a call Asterisk lost in a restart
        was talking until then."""

    async def run(self) -> str:
        """Start the call, then react until it is over."""
        dialer = self.dialer
        loop = asyncio.get_running_loop()
        if not self.job.takes_over:
            await self.apply(self.call.start())
        else:
            live = await self.live_channels()
            now = dialer.clock()
            await self.apply(self.call.resume(live, now, self.job.seen_until or now))
        watched = loop.time()
        while self.outcome is None:
            try:  # not wait_for: on 3.11 it can swallow a cancel that meets its timeout
                async with asyncio.timeout(dialer.link_check):
                    item = await self.inbox.get()
            except TimeoutError:
                item = None
            if item is not None:
                await self.feed(item)
            if self.outcome is None and loop.time() - watched >= dialer.link_check:
                watched = loop.time()
                await self.watch()
        return self.outcome

    async def feed(self, item: Event | dt.datetime) -> None:
        """Hand the call one item of its inbox: an AMI event, or a Wake that came due."""
        now = self.dialer.clock()
        await self.apply(self.call.on_time(now) if isinstance(item, dt.datetime)
                         else self.call.on_event(item, now))

    async def apply(self, effects: list[Effect]) -> None:
        """Carry out effects in order; consecutive actions go out together (both legs ring
        at once), and a Record is written before anything after it."""
        batch: list[Action] = []
        for effect in [*effects, None]:
            if self.outcome is not None:
                return  # the claim was lost: nothing more is ours to do
            if isinstance(effect, SendAction):
                batch.append(effect.action)
                continue
            if batch:
                await self.send_all(batch)
                batch = []
            if isinstance(effect, Record):
                await self.write(effect)
            elif isinstance(effect, Wake):
                self.wake_at(effect.at)
            elif isinstance(effect, Done):
                self.outcome = effect.outcome

    async def send_all(self, actions: list[Action]) -> None:
        """Send actions concurrently; a refusal goes back to the call, a lost link is resynced."""
        results = await asyncio.gather(*(self.dialer.ami.send(a) for a in actions),
                                       return_exceptions=True)
        for action, result in zip(actions, results, strict=True):
            if isinstance(result, AmiError):
                log.warning("%s: %s not answered (%s)", self.job.name, action.name, result)
            elif isinstance(result, BaseException):
                raise result
            elif result.status.lower() != "success":
                await self.apply(self.call.on_refused(action, result.message or result.status,
                                                      self.dialer.clock()))
        if any(isinstance(r, AmiError) for r in results) and not self.call.over:
            await self.resync()

    async def write(self, record: Record) -> None:
        """One store step; a lost claim means another instance owns the call now."""
        try:
            await self.job.write(record)
        except ClaimLost as lost:
            await self.let_go(lost)

    def wake_at(self, at: dt.datetime) -> None:
        """Put `at` in the inbox when it comes, in the dialer's (possibly scaled) time."""

        async def wake() -> None:
            await self.dialer.sleep(max(0.0, (at - self.dialer.clock()).total_seconds()))
            self.inbox.put_nowait(at)

        task = asyncio.create_task(wake())
        self.timers.add(task)
        task.add_done_callback(self.timers.discard)

    async def keep_claim(self) -> bool:
        """Renew the lease of a call in progress; False when it was lost (and let go)."""
        if self.call.over or self.outcome is not None:
            return self.outcome is None
        try:
            await self.job.renew()
        except ClaimLost as lost:
            await self.let_go(lost)
            return False
        return True

    async def watch(self) -> None:
        """Between events: renew the lease, and resync if the AMI link was replaced."""
        dialer = self.dialer
        job = self.job
        if dialer.clock() >= job.claim.lease_until - job.claim.lease / 2:
            if not await self.keep_claim():
                return
        status = dialer.ami.status
        if status.state is not LinkState.CONNECTED and self.lost_at is None:
            self.lost_at = dialer.clock()
        if status.connected_since != self.link:
            await self.resync()

    async def live_channels(self) -> dict[str, LiveChannel] | None:
        """Every channel Asterisk has now, by Uniqueid, this call's answered legs with
        whether they wait (NOBAT_LEG_READY); None if Asterisk cannot say."""
        ami = self.dialer.ami
        try:
            await ami.wait_ready(self.dialer.reconnect_wait)
            _, items = await ami.send_list(Action("CoreShowChannels"))
            live = {e.fields.get("Uniqueid") or "": LiveChannel.listed(e) for e in items}
            for uniqueid in self.call.channel_ids & live.keys():
                found = live[uniqueid]
                if found.up and not found.bridge_id:
                    reply = await ami.send(Action("Getvar", Fields.of(
                        Channel=found.channel, Variable=READY_VARIABLE)))
                    live[uniqueid] = replace(found, ready=reply.fields.get("Value") == "1")
        except AmiError as error:
            log.error("%s: cannot list Asterisk's channels (%s)", self.job.name, error)
            return None
        return live

    async def resync(self) -> None:
        """Events may have been lost: wait for the link, list live channels, let the call
        decide, told since when events were missed and whether Asterisk restarted
        meanwhile; nothing is ever re-sent. The lease is renewed before and after the wait,
        and events that came before the link went down are applied first."""
        if not await self.keep_claim():
            return
        live = await self.live_channels()
        if not await self.keep_claim():
            return
        while not self.inbox.empty() and self.outcome is None:
            await self.feed(self.inbox.get_nowait())
        if self.outcome is not None:
            return
        ami, now = self.dialer.ami, self.dialer.clock()
        self.link = ami.status.connected_since
        since, restarted = self.lost_at or now, ami.boots != self.boots
        if live is not None:  # the link is back: what was lost is known now
            self.boots, self.lost_at = ami.boots, None
        await self.apply(self.call.on_resync(live, now, since, restarted))

    async def clear_leftovers(self) -> bool:
        """Before a redial, hang up any channel an earlier attempt of this call still has
        (after an AMI fault, or when the instance that dialled it died); False when Asterisk
        cannot say, and then nothing may be dialled."""
        earlier = self.job.earlier_channels()
        live = await self.live_channels()
        if live is None:
            return False
        for uniqueid, found in live.items():
            if uniqueid in earlier:
                with contextlib.suppress(AmiError):
                    await self.dialer.ami.send(hangup(found.channel))
        return True

    async def let_go(self, lost: ClaimLost) -> None:
        """The store refused a step: this instance no longer owns the call, so it hangs up
        what it dialled and stops; but when another instance took this same attempt over
        (this one stalled past its lease), the legs are that one's: it leaves them be."""
        if lost.taken_over:
            log.error("%s: %s; it goes on there", self.job.name, lost)
        else:
            log.error("%s: %s; releasing its legs", self.job.name, lost)
            await self.hang_up_all()
        self.outcome = "lost"

    async def hang_up_all(self) -> None:
        """End every leg of this attempt that is still up, by name: those whose events have
        not come yet are looked up among the live channels (while the link is up)."""
        connected = self.dialer.ami.status.state is LinkState.CONNECTED
        live = await self.live_channels() if connected else None
        await self.send_all([e.action for e in self.call.release(live)
                             if isinstance(e, SendAction)])

    async def give_back(self) -> None:
        """On shutdown: hand the attempt to the next nobat, or hang up one that cannot go on
        without this one and give it back."""
        if self.call.over:
            return
        try:
            if await self.job.hand_over():
                return
        except ClaimLost:
            return  # not ours any more
        await self.hang_up_all()
        with contextlib.suppress(ClaimLost):
            await self.job.given_back()

    def stop_timers(self) -> None:
        """Cancel pending Wakes: the call is over."""
        for task in self.timers:
            task.cancel()
