"""A fake PBX, AMI clients and dialers on one real store, in a time that runs 1/SPEED fast."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bridge.ami_client import AmiClient
from bridge.dialer import Dialer, PlanFactory, Tuning, dial_and_plan
from bridge.outbound import CallPlan
from bridge.patient_call import PatientCalls
from clinic.phones import normalize
from db.consultations import ConsultationStore, RetryPolicy
from db.engine import Database
from nobat.supervisor import Supervisor
from protocol.call_token import call_token
from tests.fakepbx.agi_caller import DIALPLAN_SECRET
from tests.fakepbx.ami_server import FakeAsterisk
from tests.fakepbx.channels import NOBAT_HOLD_SECONDS
from tests.fakepbx.script import Phone

SPEED = 0.02
"""Real seconds per scripted second, for the fake PBX and for the dialer's clock alike."""
CLINIC_NUMBER = "02188776655"
CLINIC_NAME = "Clinic"
RETRY = RetryPolicy(attempts=3, spacing=dt.timedelta(seconds=5))
WARN_BEFORE = dt.timedelta(seconds=30)
LEASE = dt.timedelta(seconds=60)
"""60 scripted seconds are 1.2 real ones: enough for a loaded machine to renew in time."""


class ScaledClock:
    """Scripted time: starts at `start` and runs 1/SPEED times as fast as the real clock, so
    the fake's delays, the dialer's timers and the store's timestamps agree."""

    def __init__(self, start: dt.datetime) -> None:
        self.start, self.began = start, time.monotonic()

    def __call__(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=(time.monotonic() - self.began) / SPEED)

    def restart(self) -> None:
        """Begin the scripted time at `start` again once the rig is up: its setup, slow on a
        loaded machine, must not eat the scripted minutes a test counts."""
        self.began = time.monotonic()

    @staticmethod
    async def sleep(seconds: float) -> None:
        """Sleep `seconds` of scripted time."""
        await asyncio.sleep(seconds * SPEED)


@dataclass
class Line:
    """What a dialer test looks at: the fake PBX, the dialers and the clock they share."""

    pbx: FakeAsterisk
    dialers: list[Dialer]
    clock: ScaledClock
    running: list[asyncio.Task[None]]
    make_dialer: Callable[[AmiClient, str], Dialer]
    supervisor: Supervisor | None = None

    def start(self, client: AmiClient, instance: str) -> Dialer:
        """Start one more dialer (a nobat instance) on an AMI login: under the supervisor,
        as `nobat serve` runs it, when the line has one."""
        dialer = self.make_dialer(client, instance)
        self.dialers.append(dialer)
        if self.supervisor is not None:
            self.supervisor.add(instance, dialer.run, lambda: dialer.trouble)
            if dialer.patient_calls is not None:
                self.supervisor.add(f"{instance} planner", dialer.plan,
                                    lambda: dialer.planning_trouble)
        else:
            self.running.append(asyncio.create_task(dial_and_plan(dialer)))
        return dialer

    async def stop(self, dialer: Dialer) -> None:
        """Stop a dialer as `nobat serve` does on SIGTERM: consultations are handed to the
        next instance as they are (nothing hung up), calls to patients hung up and given
        back."""
        task = self.running.pop(self.dialers.index(dialer))
        self.dialers.remove(dialer)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await dialer.close()

    def originates(self) -> Counter[str]:
        """How many Originates the PBX received for each ChannelId, over every login."""
        return Counter(action.fields.get("ChannelId") or "" for session in self.pbx.sessions
                       for action in session.actions if action.name == "Originate")

    def actions(self, name: str) -> list[dict[str, str]]:
        """The fields of every action called `name` the PBX received, in order per login."""
        return [dict(action.fields) for session in self.pbx.sessions
                for action in session.actions if action.name == name]

    async def quiet(self) -> bool:
        """A condition for `until`: no channel is up at the PBX."""
        return not self.pbx.channels

    async def until(self, done: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
        """Wait while the dialers run until `done()` holds; fail after `seconds` real time or
        as soon as a dialer crashes."""
        async with asyncio.timeout(seconds):
            while not await done():
                for task in self.running:
                    if task.done():
                        task.result()
                await asyncio.sleep(0.01)


def plan_for(phones: Sequence[Phone], ring_seconds: float = 10, survey_in_call: bool = False
             ) -> CallPlan:
    """Ring each party's number on the fake phone that owns it, as the clinic's trunk would
    (/n: no Local optimization, which would hang up the legs nobat tracks mid-call)."""
    extens = {normalize(phone.number): phone.exten for phone in phones}
    return CallPlan("Local/{exten}@fake-phones/n", CLINIC_NUMBER, CLINIC_NAME,
                    ring_seconds=ring_seconds,
                    grace=dt.timedelta(seconds=5), warn_before=WARN_BEFORE,
                    address=lambda number: {"exten": extens[number]},
                    survey_in_call=survey_in_call,
                    call_token=functools.partial(call_token, DIALPLAN_SECRET))


@asynccontextmanager
async def line(database: Database, phones: Sequence[Phone], start: dt.datetime,
               instances: Sequence[str] = ("nobat-1",), cap: int = 8,
               ring_seconds: float = 10, clock: ScaledClock | None = None,
               fastagi: tuple[str, int] | None = None,
               patients: Callable[[CallPlan], PatientCalls] | None = None,
               survey_in_call: bool = False, supervisor: Supervisor | None = None,
               plans: Callable[[CallPlan], PlanFactory] | None = None,
               practice_share: float = 1.0) -> AsyncIterator[Line]:
    """Start the fake PBX and one AMI login and dialer per instance on `database`; with
    `patients`, the dialers also make patient calls, whose flows run on nobat's FastAGI
    server at `fastagi` (and whose services already run on `clock`); `survey_in_call`
    keeps the patient on the line for the survey after a consultation; `supervisor` runs
    the dialers (stopped by the caller); `plans` makes the dialers' plan factory from the
    phones' plan (a faulty one, say); `practice_share` is each practice's part of `cap`."""
    plan = plan_for(phones, ring_seconds, survey_in_call)
    async with FakeAsterisk(phones=phones, speed=SPEED, fastagi=fastagi,
                            hold_seconds=NOBAT_HOLD_SECONDS) as pbx:
        clients = [AmiClient("127.0.0.1", pbx.port, "ctrl", "ctrlsecret", action_timeout=2.0,
                             backoff=(0.01, 0.05), ping_interval=None) for _ in instances]
        for client in clients:
            await client.start()
            await client.wait_ready(2.0)
        if clock is None:
            clock = ScaledClock(start)  # from here on: logging in takes many scripted seconds
        else:
            clock.restart()  # the services' clock too, set up before the rig
        scaled = clock

        def make_dialer(client: AmiClient, name: str) -> Dialer:
            plan_for = plans(plan) if plans is not None else (lambda _: plan)
            return Dialer(ConsultationStore(database, scaled), client, plan_for, name, RETRY,
                          Tuning(cap, poll=2.0, lease=LEASE, reconnect_wait=2.0,
                                 link_check=0.02, practice_share=practice_share),
                          scaled, sleep=scaled.sleep,
                          patient_calls=patients(plan) if patients else None)

        pbx_line = Line(pbx, [], clock, [], make_dialer, supervisor)
        for client, name in zip(clients, instances, strict=True):
            pbx_line.start(client, name)
        dialers, running = pbx_line.dialers, pbx_line.running
        try:
            yield pbx_line
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            if supervisor is not None:
                await supervisor.close()
            for dialer in dialers:
                await dialer.close()
            for client in clients:
                await client.close()
