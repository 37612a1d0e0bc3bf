"""One outbound call run from its first effect to Done: its actions sent, its records written
before anything after them, its events, wake-ups and link losses fed back to it. An action
is never re-sent: when the AMI link drops, the runner waits for it, looks at the live
channels (CoreShowChannels) and lets the call decide from what it sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from bridge.ami_client import AmiClient, AmiError, LinkState
from bridge.ami_protocol import Action, Event, Fields
from bridge.call_jobs import Job
from bridge.call_routing import Inbox
from bridge.live_channels import READY_VARIABLE, LiveChannel
from bridge.outbound import Done, Effect, OutboundCall, Record, SendAction, Wake, hangup
from db.engine import Clock
from db.leases import ClaimLost

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class CallContext:
    """What every call of one dialer shares: the AMI link, its time, and how long it waits."""

    ami: AmiClient
    clock: Clock
    sleep: Sleep
    link_check: float
    """Seconds between looks at the lease and the AMI link while no event comes."""
    reconnect_wait: float
    """Seconds to wait for a lost AMI link before the call decides without Asterisk."""


async def run_call(context: CallContext, job: Job, call: OutboundCall, inbox: Inbox) -> str:
    """Run one attempt from Originate to Done, its events coming to `inbox`; returns its
    outcome. Cancelled (nobat stops), it hands the attempt over or gives it back first."""
    runner = CallRunner(context, call, job, inbox)
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
        runner.stop_timers()


class CallRunner:
    """Carries out one call's effects and feeds it events, time and link loss."""

    def __init__(self, context: CallContext, call: OutboundCall, job: Job, inbox: Inbox
                 ) -> None:
        self.context, self.call, self.job, self.inbox = context, call, job, inbox
        self.outcome: str | None = None
        self.timers: set[asyncio.Task[None]] = set()
        self.link = context.ami.status.connected_since
        self.boots = context.ami.boots
        self.lost_at: dt.datetime | None = None
        """When this call first saw the AMI link down: a call Asterisk lost in a restart
        was talking until then."""

    async def run(self) -> str:
        """Start the call, then react until it is over."""
        context = self.context
        loop = asyncio.get_running_loop()
        if not self.job.claim.taken_over:
            await self.apply(self.call.start())
        else:
            live = await self.live_channels()
            now = context.clock()
            await self.apply(self.call.resume(live, now, self.job.claim.seen_until or now))
        watched = loop.time()
        while self.outcome is None:
            try:  # not wait_for: on 3.11 it can swallow a cancel that meets its timeout
                async with asyncio.timeout(context.link_check):
                    item = await self.inbox.get()
            except TimeoutError:
                item = None
            if item is not None:
                await self.feed(item)
            if self.outcome is None and loop.time() - watched >= context.link_check:
                watched = loop.time()
                await self.watch()
        return self.outcome

    async def feed(self, item: Event | dt.datetime) -> None:
        """Hand the call one item of its inbox: an AMI event, or a Wake that came due."""
        now = self.context.clock()
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
        results = await asyncio.gather(*(self.context.ami.send(a) for a in actions),
                                       return_exceptions=True)
        for action, result in zip(actions, results, strict=True):
            if isinstance(result, AmiError):
                log.warning("%s: %s not answered (%s)", self.job.name, action.name, result)
            elif isinstance(result, BaseException):
                raise result
            elif result.status.lower() != "success":
                await self.apply(self.call.on_refused(action, result.message or result.status,
                                                      self.context.clock()))
        if any(isinstance(r, AmiError) for r in results) and not self.call.over:
            await self.resync()

    async def write(self, record: Record) -> None:
        """One store step; a lost claim means another instance owns the call now."""
        try:
            await self.job.write(record)
        except ClaimLost as lost:
            await self.let_go(lost)

    def wake_at(self, at: dt.datetime) -> None:
        """Put `at` in the inbox when it comes, in the context's (possibly scaled) time."""

        async def wake() -> None:
            await self.context.sleep(max(0.0, (at - self.context.clock()).total_seconds()))
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
        context, job = self.context, self.job
        if context.clock() >= job.claim.lease_until - job.claim.lease / 2:
            if not await self.keep_claim():
                return
        status = context.ami.status
        if status.state is not LinkState.CONNECTED and self.lost_at is None:
            self.lost_at = context.clock()
        if status.connected_since != self.link:
            await self.resync()

    async def live_channels(self) -> dict[str, LiveChannel] | None:
        """Every channel Asterisk has now, by Uniqueid, this call's answered legs with
        whether they wait (NOBAT_LEG_READY); None if Asterisk cannot say."""
        ami = self.context.ami
        try:
            await ami.wait_ready(self.context.reconnect_wait)
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
        ami, now = self.context.ami, self.context.clock()
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
                    await self.context.ami.send(hangup(found.channel))
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
        connected = self.context.ami.status.state is LinkState.CONNECTED
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
