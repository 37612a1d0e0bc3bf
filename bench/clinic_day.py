"""A clinic's day compressed into minutes, through `nobat serve` and the fake PBX, with faults.

Run: python -m bench.clinic_day [--minutes 10] [--calls 3000] [--consultations 150]
     [--backend sqlite|postgresql|both] [--seed 1405] [--out bench-report]

A Saturday (the week's first and busiest day) runs in `--minutes` of wall time. Its shape
follows the field facts in DESIGN.md: inbound calls peak 10:00-12:00, and the next day's
slots open at 00:00, so callers rush in during the first minutes after midnight (hour 0's
arrivals decay exponentially from 00:00 with a 10-minute time constant: about two thirds of
them fall in 00:00-00:10); consultations come due through the afternoon, peaking
16:00-18:00 (16:00 is the most-booked hour). The volume is a chosen load, not a field
figure: DESIGN.md gives no calls or consultations per clinic and day (its 21,300
consultation hours a year are the whole platform's), so 3,000 calls and 150 consultations
stand for a busy clinic's Saturday; both are flags.

Callers book, move and cancel their bookings, ask for a doctor's hours and the address, hang
up at random steps and press wrong keys, each over a real FastAGI socket; consultations ring
fake phones that answer, talk, stay silent or are busy, over AMI. Faults hit the run on
schedule: the AMI link dropped, Asterisk restarted, nobat killed (SIGKILL) and started
again, the database locked (SQLite) or restarted (PostgreSQL), and a burst of malformed
FastAGI clients.

At the end it checks the invariants and prints each with its count, then writes a Markdown
report and a PNG chart into `--out`. The figures are labelled for what they are: offered
load is calls started per wall second (what the script sent, not what nobat could take);
per-command turnaround is nobat's time from a reply leaving the fake PBX to its next
command; the booking action is that turnaround for the one command after the caller's
confirming key (nobat writes the booking, then sends the code or "slot taken"); a whole
booking call is connect to hang-up in wall time, with the caller's prompts played in the
fake PBX's virtual time. The test suite runs a short version (tests/test_clinic_day.py).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import re
import signal
import sqlite3
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo

import aiohttp
from sqlalchemy import func, select

from clinic.clinic_file import read_clinic
from clinic.phones import national, normalize
from clinic.schedule import VisitKind
from db.booking import BookingService
from db.clinic_sync import load_clinic
from db.consultations import DOWN_CAUSE, LATE_CAUSE
from db.engine import Database
from db.models import Appointment, CallAttempt, Consultation, InboundCall
from db.schema import upgrade
from tests.fakepbx.agi_caller import CallTranscript, Exchange, place_call
from tests.fakepbx.ami_server import FakeAsterisk
from tests.fakepbx.script import (
    Answers,
    Busy,
    Caller,
    CallerAction,
    HangUp,
    Hear,
    NoAnswer,
    Phone,
    PhoneBehaviour,
    Wait,
)
from tests.support.consultations import book_due
from tests.support.postgres import PostgresServer
from tests.support.server import ServerProcess, demo_copy

TEHRAN = ZoneInfo("Asia/Tehran")
DAY_SECONDS = 24 * 3600
CALL_WEIGHTS = (9, 2, 0.5, 0.3, 0.3, 0.3, 0.5, 2, 5, 8, 10, 10, 9, 7, 5, 5, 5, 5, 4, 3, 2, 1.5,
                1.2, 1)
"""Inbound calls per hour of the day, relative: the midnight rush, then the 10-12 peak."""
MIDNIGHT_RUSH_SECONDS = 600.0
"""Hour 0's callers arrive at a rate decaying from 00:00 with this time constant: the next
day's slots open at midnight and the race for them is over within minutes."""
CONSULTATION_WEIGHTS = (0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 1, 2, 3, 4, 6, 6, 5, 3, 2, 1, 0, 0)
"""Consultations due per hour, relative: through the afternoon, peaking 16-18."""
FAULTS = (("ami_drop", 9.5), ("malformed_burst", 11.0), ("database", 13.0),
          ("asterisk_restart", 16.5), ("nobat_restart", 17.5))
"""Which fault hits at which hour of the simulated day."""
AMI_SECRET = "day-ami-secret"
PBX_SPEED = 0.05
"""Real seconds per scripted second at the fake PBX: a 60 s consultation talks 3 s."""
SETTLE_SECONDS = 90.0
WARM_UP_HOURS = 1.25
"""A nobat's warmed-up size is its first hourly sample this long after it started: 2 h for
the first one (after the midnight rush), 19 h for the one restarted at 17.5 h."""
MEMORY_GROWTH = 1.10
"""More growth than this from the warmed-up size to a process's last sample is a leak."""
MEMORY_CHECKS = ("memory of the first nobat (served the peak) over 10% above its warmed-up size",
                 "memory of the restarted nobat over 10% above its warmed-up size")
"""The memory invariants' names, by process: the first nobat, then the one restarted."""
PEAK_WINDOW_SECONDS = 600
"""Offered load's peak is the busiest window of this many simulated seconds."""
CONFIRM_KEY = str(ord("1"))
"""The result Asterisk gives a prompt that the confirming key "1" interrupted."""
GOALS = {"book": "your-code", "move": "rescheduled", "cancel": "cancelled",
         "hours": "hours-of", "address": "address-intro", "wrong_keys": "invalid"}
"""The prompt that shows a caller of each kind got what they called for; a hang_up caller's
goal is to have hung up themselves."""
KINDS = (*GOALS, "hang_up")


@dataclass(frozen=True)
class DayPlan:
    """How big and how fast the day is."""

    backend: str = "sqlite"
    wall_minutes: float = 10.0
    calls: int = 3000
    consultations: int = 150
    seed: int = 1405
    faults: bool = True


@dataclass
class CallResult:
    """One inbound call as the caller lived it."""

    at: float
    """The simulated second of the day the call started."""
    kind: str
    caller: str
    prompts: list[str]
    turnaround: list[float]
    seconds: float
    error: str | None = None
    began: float = 0.0
    ended: float = 0.0
    """Monotonic wall-clock start and end, to tell calls cut by a restart."""
    ended_by: str | None = None
    action_seconds: float | None = None
    """nobat's turnaround for the command after the confirming key, if the call had one."""

    @property
    def hour(self) -> int:
        """The simulated hour the call started in."""
        return int(self.at // 3600)

    def heard(self, name: str) -> bool:
        """Whether the caller heard the prompt `name` (in any language)."""
        return any(p.endswith("/" + name) for p in self.prompts)

    def reached(self) -> bool:
        """Whether the caller got what their kind of call is for."""
        if self.kind == "hang_up":
            return self.ended_by == "caller"
        return self.heard(GOALS[self.kind])

    def codes(self) -> list[str]:
        """Booking codes read out to the caller after "your-code"."""
        found = []
        for index, prompt in enumerate(self.prompts):
            if prompt.endswith("/your-code"):
                digits = [re.search(r"/num/(\d)$", p) for p in self.prompts[index + 1:index + 7]]
                if all(digits):
                    found.append("".join(d.group(1) for d in digits if d))
        return found


@dataclass(frozen=True)
class Invariant:
    """One rule the day must keep: how often it broke, of how many things it looked at."""

    name: str
    violations: int
    checked: int
    note: str = ""
    """Why it broke, or the figures it compared."""


@dataclass(frozen=True)
class MemorySample:
    """nobat's resident memory at one moment of the simulated day."""

    hour: float
    mb: float
    process: int
    """1 for the first nobat, 2 for the one started after the kill."""
    before_kill: bool = False


@dataclass(frozen=True)
class Outage:
    """nobat down, from the kill until its successor listened: monotonic and UTC."""

    began: float
    ended: float
    began_at: dt.datetime
    ended_at: dt.datetime


@dataclass(frozen=True)
class ConsultationRow:
    """What the store says about one of the day's consultations at the end."""

    id: int
    state: str
    cause: str | None
    attempts: int
    due_at: dt.datetime
    updated_at: dt.datetime
    ends_at: dt.datetime


@dataclass(frozen=True)
class AttemptRow:
    """One CallAttempt row: whose, its two legs, and whether it was bridged."""

    consultation_id: int
    legs: tuple[str, str]
    bridged: bool


@dataclass
class DayRun:
    """Everything measured, for the invariants and the report."""

    plan: DayPlan
    calls: list[CallResult] = field(default_factory=list)
    faults: list[tuple[str, float, str]] = field(default_factory=list)
    """(fault, simulated hour, what happened)."""
    rss: list[MemorySample] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    consultations: Counter[str] = field(default_factory=Counter)
    """The day's consultations by final state."""
    invariants: list[Invariant] = field(default_factory=list)
    wall_seconds: float = 0.0
    late_start: float = 0.0
    """Wall seconds the day had already run when nobat first listened (0: on time)."""


def arrivals(rng: random.Random, count: int, weights: Sequence[float],
             rush: float | None = None) -> list[float]:
    """`count` simulated seconds spread over the day by hourly `weights`, sorted; with `rush`,
    hour 0's decay from midnight with that time constant instead of spreading evenly."""
    hours = rng.choices(range(24), weights=weights, k=count)
    return sorted(hour * 3600 + _within_hour(rng, rush if hour == 0 else None)
                  for hour in hours)


def _within_hour(rng: random.Random, rush: float | None) -> float:
    """A second within the hour: even, or exponential from its start (redrawn past its end)."""
    if rush is None:
        return rng.random() * 3600
    while (second := rng.expovariate(1 / rush)) >= 3600:
        pass
    return second


Steps = tuple[CallerAction | str, ...]
BOOK: Steps = (
    Hear("main-menu"), "1", Hear("choose-specialty"), "1", Hear("choose-day"), "1",
    Hear("choose-time"), "1", Hear("confirm-keys"), "1", Hear("anything-else"), "9")


class Script(NamedTuple):
    """One caller: their kind of call, number and keys."""

    kind: str
    number: str
    steps: Steps


def script(rng: random.Random, booked: list[str]) -> Script:
    """A caller's number and what they do, by the day's mix; a cancelled booking is not
    cancelled or moved again."""
    roll = rng.random()
    if booked and roll < 0.10:
        number = booked.pop(rng.randrange(len(booked)))
        return Script("cancel", number, (
            Hear("main-menu"), "2", Hear("choose-appointment"), "1", Hear("cancel-it"), "1",
            Hear("confirm-keys"), "1", Hear("anything-else"), "9"))
    if booked and roll < 0.18:
        return Script("move", rng.choice(booked), (
            Hear("main-menu"), "2", Hear("choose-appointment"), "1", Hear("move-it"), "2",
            Hear("choose-day"), "1", Hear("choose-time"), "1", Hear("confirm-keys"), "1",
            Hear("anything-else"), "9"))
    number = f"0912{rng.randrange(10_000_000):07d}"
    if roll < 0.55:
        return Script("book", number, BOOK)
    if roll < 0.68:
        return Script("hours", number, (Hear("main-menu"), "4", Hear("choose-specialty"), "1",
                                        Hear("anything-else"), "9"))
    if roll < 0.78:
        return Script("address", number, (Hear("main-menu"), "3", Hear("anything-else"), "9"))
    if roll < 0.92:
        cut = rng.randrange(1, len(BOOK) - 2)
        return Script("hang_up", number, (*BOOK[:cut], Wait(rng.random() * 3), HangUp()))
    return Script("wrong_keys", number, (Hear("main-menu"), "7", Hear("main-menu-short"), "8",
                                         Hear("main-menu-short"), "9"))


def _plays(exchange: Exchange, prompt: str) -> bool:
    """Whether a command played the prompt `prompt` (its first argument is the file)."""
    return bool(exchange.command.args) and exchange.command.args[0].endswith("/" + prompt)


def action_seconds(transcript: CallTranscript, turnaround: list[float]) -> float | None:
    """nobat's time from the reply carrying the confirming key to its next command: the
    action itself (a booking written, then the code or "slot taken" sent), on the server."""
    exchanges = transcript.exchanges
    asked = next((i for i, e in enumerate(exchanges) if _plays(e, "confirm-keys")), None)
    if asked is None:
        return None
    key = next((i for i in range(asked, len(exchanges))
                if exchanges[i].reply.result == CONFIRM_KEY), None)
    if key is None or key + 1 >= min(len(exchanges), len(turnaround)):
        return None
    return turnaround[key + 1]


class Day:
    """Runs one simulated day against one backend."""

    def __init__(self, plan: DayPlan, folder: Path, url: str,
                 postgres: PostgresServer | None) -> None:
        self.plan, self.folder, self.url, self.postgres = plan, folder, url, postgres
        self.rng = random.Random(plan.seed)
        self.run = DayRun(plan)
        self.scale = DAY_SECONDS / (plan.wall_minutes * 60)
        self.started = 0.0
        self.booked: list[str] = []
        self.server: ServerProcess | None = None
        self.process = 0
        """How many nobat processes have been started: the current one's number."""
        self.pbx: FakeAsterisk | None = None
        self.config = folder / "config.toml"
        self.consultation_ids: list[int] = []

    def hour(self) -> float:
        """The simulated hour now."""
        return (time.monotonic() - self.started) * self.scale / 3600

    async def at(self, simulated: float) -> None:
        """Sleep until a simulated second of the day."""
        await asyncio.sleep(max(0.0, self.started + simulated / self.scale - time.monotonic()))

    async def prepare(self, database: Database, pbx: FakeAsterisk) -> None:
        """The store, the clinic, and the day's consultations booked with their due times."""
        text = self.config.read_text()
        text = text.replace("port = 5038", f"port = {pbx.port}")
        text = text.replace('dial = "PJSIP/{national}@clinic-trunk"',
                            'dial = "Local/{national}@fake-phones/n"')
        text = text.replace("ring_seconds = 45", "ring_seconds = 5")
        text = text.replace("attempts = 3", "attempts = 2").replace("retry_minutes = 2",
                                                                    "retry_minutes = 1")
        text = text.replace("poll_seconds = 5", "poll_seconds = 0.2")
        # The day is about the line and the consultations (with their in-call survey); the
        # reminder and absence calls the real clock would plan are left out.
        text = text.replace("reminders = true", "reminders = false")
        text = text.replace("absence_calls = true", "absence_calls = false")
        text = text.replace('url = "sqlite+aiosqlite:///nobat.db"', f'url = "{self.url}"')
        self.config.write_text(text.replace("watch_seconds = 2", "watch_seconds = 0"))
        await upgrade(database)
        await load_clinic(database, read_clinic(self.folder / "clinic.toml"))
        service = BookingService(database)
        doctors = await service.doctors()
        due = arrivals(self.rng, self.plan.consultations, CONSULTATION_WEIGHTS)
        slots = []
        for doctor in doctors:
            for day in await service.next_free_days(doctor.id, limit=60):
                slots += [(doctor, s.start) for s in await service.free_slots(doctor.id, day)
                          if VisitKind.PHONE in s.kinds]
        self.rng.shuffle(slots)
        for n, (simulated, (doctor, start)) in enumerate(zip(due, slots, strict=False)):
            patient = f"0935{n:07d}"
            pbx.phones[patient] = Phone(patient, "+98" + patient[1:], self._behaviour(),
                                        f"Patient {n}")
            _, consultation = await book_due(service, database, doctor.id, patient, start,
                                             self.real_time(simulated))
            self.consultation_ids.append(consultation)
        for spec in read_clinic(self.folder / "clinic.toml").doctors:
            number = normalize(spec.phone)
            pbx.phones[national(number)] = Phone(national(number), number, Answers(1.0),
                                                 spec.key)

    def _behaviour(self) -> PhoneBehaviour:
        """A patient's phone: most answer and talk, some stay silent, some are busy."""
        roll = self.rng.random()
        if roll < 0.08:
            return NoAnswer()
        if roll < 0.13:
            return Busy()
        return Answers(self.rng.uniform(1, 4), talk=self.rng.uniform(60, 300))

    def real_time(self, simulated: float) -> dt.datetime:
        """The wall-clock instant a simulated second of the day falls on."""
        return utc_at(self.started + simulated / self.scale)

    async def call(self, simulated: float) -> None:
        """One inbound caller at their moment of the day."""
        await self.at(simulated)
        kind, number, steps = script(self.rng, self.booked)
        turnaround: list[float] = []
        result = CallResult(simulated, kind, number, [], turnaround, 0.0,
                            began=time.monotonic())
        server = self.server
        try:
            assert server is not None
            transcript: CallTranscript = await place_call(
                "127.0.0.1", server.fastagi_port, Caller.dialling(number, *steps),
                strict=False, turnaround=turnaround, stall_seconds=30)
            result.prompts, result.ended_by = transcript.prompts, transcript.hung_up_by
            result.action_seconds = action_seconds(transcript, turnaround)
        except (OSError, TimeoutError, AssertionError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        result.ended = time.monotonic()
        result.seconds = result.ended - result.began
        if kind == "book" and result.codes():
            self.booked.append(number)
        self.run.calls.append(result)

    async def fault(self, name: str, hour: float, pbx: FakeAsterisk) -> None:
        """Hit the system at its hour; note what was done."""
        await self.at(hour * 3600)
        began = self.hour()
        if name == "ami_drop":
            await pbx.drop()
            note = "every AMI connection closed"
        elif name == "asterisk_restart":
            await pbx.restart(clean=False)
            note = "Asterisk killed and started: every channel gone"
        elif name == "malformed_burst":
            note = await self._malformed(50)
        elif name == "database":
            note = await self._database_fault()
        else:
            note = await self._restart_nobat()
        self.run.faults.append((name, began, note))

    async def _malformed(self, count: int) -> str:
        """Clients that are not Asterisk, or break off: none may stall the real callers."""
        assert self.server is not None
        port = self.server.fastagi_port
        garbage = [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"agi_network: yes\nagi_req",
                   b"\xff\xfe\x00garbage\n\n", b"agi_request: agi://x/ivr\n" * 4000, b""]

        async def one(n: int) -> None:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(garbage[n % len(garbage)])
                await writer.drain()
                if n % 2:
                    writer.close()
                else:
                    await asyncio.wait_for(reader.read(1024), 2)
                    writer.close()
            except (OSError, TimeoutError):
                pass

        await asyncio.gather(*(one(n) for n in range(count)))
        return f"{count} malformed FastAGI clients (HTTP, half environments, binary, oversized)"

    async def _database_fault(self) -> str:
        """The store briefly out of reach: nothing a caller heard confirmed may be lost."""
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.restart)
            return "PostgreSQL restarted (fast shutdown)"
        path = self.url.split("///", 1)[1]

        def hold() -> None:
            lock = sqlite3.connect(path, timeout=10)
            lock.execute("BEGIN EXCLUSIVE")
            time.sleep(3)
            lock.rollback()
            lock.close()

        await asyncio.to_thread(hold)
        return "SQLite file locked exclusively for 3 s"

    async def _restart_nobat(self) -> str:
        """Kill nobat as a power cut would, its size noted just before, and start another."""
        assert self.server is not None and self.server.process is not None
        self._sample(self.hour(), before_kill=True)
        killed = time.monotonic()
        self.server.process.send_signal(signal.SIGKILL)
        await self.server.process.wait()
        self.server = await self._start_server()
        up = time.monotonic()
        self.run.outages.append(Outage(killed, up, utc_at(killed), utc_at(up)))
        return f"nobat killed with SIGKILL and started again ({up - killed:.1f} s down)"

    async def _start_server(self) -> ServerProcess:
        """Start nobat; the PBX's in-call surveys reach its new FastAGI port."""
        server = await ServerProcess(self.config, env={"NOBAT_AMI_SECRET": AMI_SECRET,
                                                       "NOBAT_WEB_TOKEN": "day"}).start()
        self.process += 1
        if self.pbx is not None:
            self.pbx.fastagi = ("127.0.0.1", server.fastagi_port)
        return server

    async def sample_memory(self) -> None:
        """nobat's RSS every simulated hour (none while it is being restarted)."""
        for hour in range(1, 25):
            await self.at(hour * 3600 - 1)
            self._sample(hour)

    def _sample(self, hour: float, before_kill: bool = False) -> None:
        """Note the running nobat's RSS, if it can be read."""
        rss = self._rss()
        if rss is not None:
            self.run.rss.append(MemorySample(hour, rss, self.process, before_kill))

    def _rss(self) -> float | None:
        """The running nobat's resident MB from /proc, None while no process is there."""
        assert self.server is not None and self.server.process is not None
        try:
            status = Path(f"/proc/{self.server.process.pid}/status").read_text()
        except OSError:
            return None
        found = re.search(r"VmRSS:\s+(\d+)", status)
        return None if found is None else int(found.group(1)) / 1024

    async def play(self) -> DayRun:
        """Run the day, settle, check the invariants."""
        users = {"nobat": (AMI_SECRET, "call,system,user", "call,originate,reporting")}
        database = Database.from_url(self.url)
        async with FakeAsterisk(users=users, phones=[], speed=PBX_SPEED) as pbx:
            self.pbx = pbx
            self.started = time.monotonic() + 5.0  # the day starts once everything is up
            await self.prepare(database, pbx)
            self.server = await self._start_server()
            self.run.late_start = max(0.0, time.monotonic() - self.started)
            work: list[Awaitable[None]] = [
                self.call(s) for s in arrivals(self.rng, self.plan.calls, CALL_WEIGHTS,
                                               rush=MIDNIGHT_RUSH_SECONDS)]
            work.append(self.sample_memory())
            if self.plan.faults:
                work += [self.fault(name, hour, pbx) for name, hour in FAULTS]
            began = time.monotonic()
            await asyncio.gather(*work)
            await self.settle(database)
            self.run.wall_seconds = time.monotonic() - began
            await self.check(database, pbx)
            assert self.server is not None
            await self.server.stop()
        await database.close()
        return self.run

    async def settle(self, database: Database) -> None:
        """Wait until no consultation is dialling, bridged or due again."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            async with database.reading() as session:
                busy = await session.scalar(select(func.count()).select_from(Consultation).where(
                    Consultation.state.in_(("dialling", "bridged", "retry_wait", "scheduled")),
                    Consultation.id.in_(self.consultation_ids)))
            if not busy:
                return
            await asyncio.sleep(0.5)

    async def check(self, database: Database, pbx: FakeAsterisk) -> None:
        """Each invariant with its violations and how many things it looked at."""
        rows, attempts = await self._consultations(database)
        self.run.consultations = Counter(row.state for row in rows)
        found = self.run.invariants
        found += await self._booking_invariants(database)
        found.append(legs_invariant(attempts, pbx))
        found += consultation_invariants(rows, attempts, self.run.outages)
        found += await self._open_calls(database)
        found += memory_invariants(self.run)
        found.append(unreached_invariant(self.run))

    async def _booking_invariants(self, database: Database) -> list[Invariant]:
        """No slot held twice; the bookings callers heard confirmed are exactly those stored."""
        async with database.reading() as session:
            doubles = (await session.execute(
                select(Appointment.doctor_id, Appointment.start_at, func.count())
                .where(Appointment.status != "cancelled")
                .group_by(Appointment.doctor_id, Appointment.start_at)
                .having(func.count() > 1))).all()
            appointments = (await session.execute(
                select(Appointment.code, Appointment.created_via))).all()
        heard = {code for call in self.run.calls for code in call.codes()}
        stored = {code for code, via in appointments if via == "ivr"}
        return [Invariant("double bookings", len(doubles), len(appointments)),
                Invariant("bookings heard confirmed but not stored", len(heard - stored),
                          len(heard)),
                Invariant("IVR bookings stored but never confirmed to a caller",
                          len(stored - heard), len(stored))]

    async def _consultations(self, database: Database
                             ) -> tuple[list[ConsultationRow], list[AttemptRow]]:
        """The day's consultations as the store ends them, and every call attempt."""
        async with database.reading() as session:
            rows = (await session.execute(
                select(Consultation.id, Consultation.state, Consultation.cause,
                       Consultation.attempts, Consultation.due_at, Consultation.updated_at,
                       Appointment.end_at)
                .join(Appointment, Consultation.appointment_id == Appointment.id)
                .where(Consultation.id.in_(self.consultation_ids)))).all()
            attempts = (await session.execute(
                select(CallAttempt.consultation_id, CallAttempt.doctor_channel_id,
                       CallAttempt.patient_channel_id, CallAttempt.bridged_at))).all()
        return ([ConsultationRow(*row) for row in rows],
                [AttemptRow(ident, (doctor, patient), bridged is not None)
                 for ident, doctor, patient, bridged in attempts])

    async def _open_calls(self, database: Database) -> list[Invariant]:
        """Every call that reached nobat is in the call log (but those the kill cut short:
        nobat writes a call at its end), and no IVR session is left open at nobat."""
        async with database.reading() as session:
            logged = (await session.scalars(select(InboundCall.caller))).all()
        return [unlogged_invariant(self.run.calls, logged, self.run.outages),
                Invariant("IVR sessions still open at nobat", await self._live_calls(), 1)]

    async def _live_calls(self) -> int:
        """IVR sessions nobat's status API still lists once every caller has hung up."""
        assert self.server is not None
        async with aiohttp.ClientSession() as http, http.get(
                self.server.base_url + "/api/status",
                headers={"Authorization": "Bearer day"}) as reply:
            body = await reply.json()
        return len(body["live_calls"])


def utc_at(moment: float) -> dt.datetime:
    """The UTC instant a reading of the monotonic clock falls on."""
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=moment - time.monotonic())


def unlogged_invariant(calls: list[CallResult], logged: Sequence[str | None],
                       outages: list[Outage]) -> Invariant:
    """Connected calls the call log lacks, by caller, less those of the caller that the kill
    cut short (a call in progress at SIGKILL never reaches the log)."""
    connected = [c for c in calls if not c.error]
    missing = Counter(normalize(c.caller) for c in connected) - Counter(logged)
    excused = Counter(normalize(c.caller) for c in connected if cut_by_restart(c, outages))
    unexcused = {caller: n - excused[caller] for caller, n in missing.items()
                 if n > excused[caller]}
    hours = sorted(c.at / 3600 for c in connected if normalize(c.caller) in unexcused)
    note = (f"{min(missing.total(), excused.total())} cut by the kill" if missing
            else "every connected call logged")
    return Invariant("connected calls missing from the call log (outside the kill)",
                     sum(unexcused.values()), len(connected),
                     "; ".join([note, *(f"{h:.2f} h" for h in hours[:6])]))


def legs_invariant(attempts: list[AttemptRow], pbx: FakeAsterisk) -> Invariant:
    """Each attempt's two ChannelIds reached Asterisk in exactly one Originate each."""
    originates = Counter(a.fields.get("ChannelId") for s in pbx.sessions for a in s.actions
                         if a.name == "Originate")
    legs = [leg for attempt in attempts for leg in attempt.legs]
    bad = [leg for leg in legs if originates[leg] != 1]
    return Invariant("legs originated other than exactly once per attempt", len(bad), len(legs),
                     "; ".join(f"{leg}: {originates[leg]}" for leg in bad[:3]))


def consultation_invariants(rows: list[ConsultationRow], attempts: list[AttemptRow],
                            outages: list[Outage]) -> list[Invariant]:
    """Every due consultation was tried (or its cause says why it could not be), each attempt
    is on record, and it ended completed (bridged) or missed with a cause."""
    tried = Counter(attempt.consultation_id for attempt in attempts)
    bridged = {attempt.consultation_id for attempt in attempts if attempt.bridged}
    never = [r for r in rows if not tried[r.id] and not untried_explained(r, outages)]
    miscounted = [r for r in rows if tried[r.id] != r.attempts]
    unsettled = [r for r in rows
                 if not (r.state == "completed" or (r.state == "missed" and r.cause))]
    unbridged = [r for r in rows if r.state == "completed" and r.id not in bridged]
    return [
        _rule("due consultations never tried, without a cause that explains it", never, rows,
              lambda r: f"{r.state}, cause {r.cause!r}"),
        _rule("consultations whose attempt rows differ from their attempt counter", miscounted,
              rows, lambda r: f"{tried[r.id]} rows, counter {r.attempts}"),
        _rule("consultations not completed or missed with a cause", unsettled, rows,
              lambda r: f"{r.state}, cause {r.cause!r}"),
        _rule("completed consultations with no bridged attempt", unbridged, rows,
              lambda r: f"{tried[r.id]} attempts, none bridged")]


def _rule(name: str, bad: list[ConsultationRow], rows: list[ConsultationRow],
          why: Callable[[ConsultationRow], str]) -> Invariant:
    """An invariant over the consultations, naming the first few that broke it."""
    return Invariant(name, len(bad), len(rows), "; ".join(f"#{r.id} {why(r)}" for r in bad[:3]))


def untried_explained(row: ConsultationRow, outages: list[Outage]) -> bool:
    """An untried consultation is fine only if missed with a cause the run's facts bear out:
    due while nobat was down, or its booked time over before it could be dialled."""
    if row.state != "missed":
        return False
    if row.cause == DOWN_CAUSE:
        return any(o.began_at <= row.due_at <= o.ended_at for o in outages)
    return row.cause == LATE_CAUSE and row.ends_at <= row.updated_at


def memory_invariants(run: DayRun) -> list[Invariant]:
    """The first nobat from its warm-up to just before the kill (to the end without faults),
    and the restarted one from its warm-up to the end."""
    restart = next((hour for name, hour, _ in run.faults if name == "nobat_restart"), None)
    checks = [memory_check(run.rss, 1, 0.0, killed=restart is not None)]
    if run.plan.faults and restart is None:
        checks.append(Invariant(MEMORY_CHECKS[1], 1, 0, "nobat was never restarted"))
    elif restart is not None:
        checks.append(memory_check(run.rss, 2, restart, killed=False))
    return checks


def memory_check(samples: list[MemorySample], process: int, started: float,
                 killed: bool) -> Invariant:
    """One process's warmed-up size against its last sample; a missing sample is a failure
    that says which, never a silent pass."""
    name = MEMORY_CHECKS[process - 1]
    own = sorted((s for s in samples if s.process == process), key=lambda s: s.hour)
    warm = next((s for s in own if s.hour >= started + WARM_UP_HOURS), None)
    if warm is None:
        return Invariant(name, 1, 0, f"no sample {WARM_UP_HOURS:g} h after it started at "
                                     f"{started:.2f} h ({len(own)} samples in all)")
    last = own[-1]
    if last is warm:
        return Invariant(name, 1, 0, f"no sample after the warmed-up one ({warm.hour:.2f} h)")
    if killed and not last.before_kill:
        return Invariant(name, 1, 0, f"no sample just before the kill (last {last.hour:.2f} h)")
    if not killed and last.hour < 24:
        return Invariant(name, 1, 0, f"no sample at the end of the day (last {last.hour:.2f} h)")
    when = "just before the kill" if killed else "at the end"
    note = (f"{warm.mb:.0f} MB at {warm.hour:.2f} h, {last.mb:.0f} MB at {last.hour:.2f} h "
            f"({when})")
    return Invariant(name, int(last.mb > warm.mb * MEMORY_GROWTH), 1, note)


def unreached_invariant(run: DayRun) -> Invariant:
    """Every inbound call reached nobat, except those that began or ran while it was down."""
    errors = [c for c in run.calls if c.error]
    failed = [c for c in errors if not cut_by_restart(c, run.outages)]
    cut = len(errors) - len(failed)
    return Invariant("inbound calls that could not reach nobat (outside the restart)",
                     len(failed), len(run.calls), "; ".join(
                         [f"{cut} cut by the restart",
                          *(f"{c.at / 3600:.2f} h {c.error}" for c in failed[:3])]))


def cut_by_restart(call: CallResult, outages: list[Outage]) -> bool:
    """Whether the call began, or was still going, while nobat was down."""
    return any(call.began <= o.ended and call.ended >= o.began for o in outages)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of values, 0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def wall_seconds_of(run: DayRun, simulated: float) -> float:
    """How many wall seconds `simulated` seconds of the day took in this run."""
    return simulated * run.plan.wall_minutes * 60 / DAY_SECONDS


def peak_offered(run: DayRun) -> tuple[float, float]:
    """Calls started per wall second in the busiest window, and the hour the window starts."""
    windows = Counter(int(c.at // PEAK_WINDOW_SECONDS) for c in run.calls)
    if not windows:
        return 0.0, 0.0
    window, count = max(windows.items(), key=lambda item: (item[1], -item[0]))
    return (count / wall_seconds_of(run, PEAK_WINDOW_SECONDS),
            window * PEAK_WINDOW_SECONDS / 3600)


def summary(run: DayRun) -> dict[str, float]:
    """The headline figures of one run, each named for what it measures."""
    turn = [t * 1000 for c in run.calls for t in c.turnaround]
    action = [c.action_seconds * 1000 for c in run.calls
              if c.kind == "book" and c.action_seconds is not None]
    booking = [c.seconds * 1000 for c in run.calls if c.kind == "book" and c.codes()]
    peak, peak_at = peak_offered(run)
    return {"calls": len(run.calls),
            "offered_mean": len(run.calls) / wall_seconds_of(run, DAY_SECONDS),
            "offered_peak": peak, "peak_at": peak_at,
            "rush": sum(1 for c in run.calls if c.at < PEAK_WINDOW_SECONDS),
            "hour0": sum(1 for c in run.calls if c.hour == 0),
            "turn_p50": percentile(turn, 50), "turn_p99": percentile(turn, 99),
            "action_p50": percentile(action, 50), "action_p99": percentile(action, 99),
            "actions": len(action),
            "booking_p50": percentile(booking, 50), "booking_p99": percentile(booking, 99),
            "bookings": len(booking), "completed": run.consultations["completed"],
            "consultations": sum(run.consultations.values())}


MEASURES = (
    "- **Offered load** is what the script sent: calls started per wall second, over the "
    "whole day (mean) and in its busiest 10 simulated minutes (peak). It is not a capacity.",
    "- **Per-command turnaround** is nobat's time per FastAGI command: from a reply leaving "
    "the fake PBX to nobat's next command arriving.",
    "- **Booking action** is that turnaround for the one command after the caller's "
    "confirming key: nobat writes the booking (or meets the slot taken) and sends the code "
    "or \"slot taken\" prompt. Every booking call that reached the confirming key counts.",
    "- **Whole booking call** is a call that heard its code, from connect to hang-up in wall "
    "time; the caller's prompts play in the fake PBX's virtual time, so it is nobat's work "
    "for the whole dialogue, not what a caller on a real line waits.",
)
"""What each figure of the report measures, printed under its table."""


def report(runs: list[DayRun], out: Path) -> Path:
    """Write report.md and day.png into `out`; return the Markdown's path."""
    out.mkdir(parents=True, exist_ok=True)
    chart(runs, out / "day.png")
    plan = runs[0].plan
    lines = ["# nobat: a simulated clinic day", "",
             f"A Saturday compressed into {plan.wall_minutes:g} minutes of wall time "
             f"(seed {plan.seed}): {plan.calls} inbound calls and {plan.consultations} phone "
             "consultations (a chosen load; the day's shape follows DESIGN.md's field facts), "
             "through `nobat serve`, the fake PBX over real FastAGI and AMI sockets, and the "
             "real database.", "",
             "![calls per 10 simulated minutes and turnaround per hour, faults marked](day.png)",
             "", "| backend | calls | offered load, mean calls/s | offered load, peak calls/s | "
             "per-command turnaround p50 / p99 ms | booking action p50 / p99 ms | "
             "whole booking call p50 / p99 ms | IVR bookings | consultations completed | "
             "wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(run) for run in runs]
    lines += ["", *MEASURES]
    for run in runs:
        lines += _section(run)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _row(run: DayRun) -> str:
    """One backend's line of the headline table."""
    s = summary(run)
    return (f"| {run.plan.backend} | {s['calls']:.0f} | {s['offered_mean']:.1f} | "
            f"{s['offered_peak']:.1f} (from {s['peak_at']:05.2f} h) | "
            f"{s['turn_p50']:.1f} / {s['turn_p99']:.1f} | "
            f"{s['action_p50']:.1f} / {s['action_p99']:.1f} ({s['actions']:.0f}) | "
            f"{s['booking_p50']:.0f} / {s['booking_p99']:.0f} | {s['bookings']:.0f} | "
            f"{s['completed']:.0f} of {s['consultations']:.0f} | {run.wall_seconds:.0f} |")


def _section(run: DayRun) -> list[str]:
    """One backend's faults, invariants, calls, consultations and memory."""
    s = summary(run)
    lines = ["", f"## {run.plan.backend}", ""]
    if run.late_start:
        lines += [f"The day had run {run.late_start:.1f} wall seconds before nobat first "
                  "listened: its first callers waited for it.", ""]
    lines += ["Faults:", ""]
    lines += [f"- {hour:05.2f} h: {name}: {note}" for name, hour, note in run.faults]
    lines += ["", "| invariant | violations | checked | figures / why |", "|---|---|---|---|"]
    lines += [f"| {i.name} | {i.violations} | {i.checked} | {i.note} |" for i in run.invariants]
    kinds = Counter(c.kind for c in run.calls)
    reached = Counter(c.kind for c in run.calls if c.reached())
    lines += ["", "Calls by kind (reached their goal / placed): " + ", ".join(
        f"{k} {reached[k]}/{kinds[k]}" for k in KINDS) + ".",
        "", f"Midnight rush: {s['rush']:.0f} of hour 0's {s['hour0']:.0f} calls came in "
        "00:00-00:10.", "",
        "Consultations by final state: " + ", ".join(
            f"{state} {n}" for state, n in sorted(run.consultations.items())) + ".",
        "", "nobat's memory (MB) by simulated hour: " + ", ".join(
            f"{m.hour:.2f}h {m.mb:.0f}" + (" (before the kill)" if m.before_kill else "")
            for m in run.rss) + "."]
    return lines


def chart(runs: list[DayRun], path: Path) -> None:
    """Calls per 10 simulated minutes (the midnight burst shows) and turnaround per hour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    bins = [n * PEAK_WINDOW_SECONDS / 3600 for n in range(DAY_SECONDS // PEAK_WINDOW_SECONDS)]
    hours = list(range(24))
    windows = Counter(int(c.at // PEAK_WINDOW_SECONDS) for c in runs[0].calls)
    axes[0].step(bins, [windows[n] for n in range(len(bins))], where="post",
                 label="calls offered (one seed: the same on each backend)")
    for run in runs:
        per_hour: dict[int, list[float]] = defaultdict(list)
        for call in run.calls:
            per_hour[call.hour] += [t * 1000 for t in call.turnaround]
        axes[1].plot(hours, [percentile(per_hour[h], 99) for h in hours], marker="o",
                     label=f"{run.plan.backend} p99")
        axes[1].plot(hours, [percentile(per_hour[h], 50) for h in hours], linestyle="--",
                     label=f"{run.plan.backend} p50")
    for name, hour, _ in runs[0].faults:
        for ax in axes:
            ax.axvline(hour, color="grey", linestyle=":")
        axes[0].annotate(name.replace("_", " "), (hour, 0), rotation=90, fontsize=7,
                         va="bottom")
    axes[0].set_ylabel("inbound calls per 10 simulated min")
    axes[1].set_ylabel("per-command turnaround, ms")
    axes[1].set_xlabel("hour of the simulated Saturday (Asia/Tehran)")
    axes[0].legend()
    axes[1].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


async def run_day(plan: DayPlan) -> DayRun:
    """One day on one backend, in a folder of its own."""
    with tempfile.TemporaryDirectory(prefix="nobat-day-") as tmp:
        folder = Path(tmp)
        demo_copy(folder)
        if plan.backend == "postgresql":
            postgres = await asyncio.to_thread(PostgresServer().start)
            try:
                url = await postgres.create_database()
                return await Day(plan, folder, url, postgres).play()
            finally:
                await asyncio.to_thread(postgres.stop)
        url = f"sqlite+aiosqlite:///{folder / 'nobat.db'}"
        return await Day(plan, folder, url, None).play()


def print_run(run: DayRun) -> None:
    """The run's headline figures and each invariant, on the terminal."""
    s = summary(run)
    print(f"{run.plan.backend}: {s['calls']:.0f} calls in {run.wall_seconds:.0f} s; offered "
          f"load mean {s['offered_mean']:.1f} calls/s, peak {s['offered_peak']:.1f} calls/s "
          f"from {s['peak_at']:05.2f} h; per-command turnaround p50 {s['turn_p50']:.1f} ms "
          f"p99 {s['turn_p99']:.1f} ms; booking action p50 {s['action_p50']:.1f} ms p99 "
          f"{s['action_p99']:.1f} ms ({s['actions']:.0f}); whole booking call p50 "
          f"{s['booking_p50']:.0f} ms p99 {s['booking_p99']:.0f} ms ({s['bookings']:.0f} "
          f"booked); consultations completed {s['completed']:.0f} of "
          f"{s['consultations']:.0f}")
    if run.late_start:
        print(f"  the day had run {run.late_start:.1f} s before nobat first listened")
    for name, hour, note in run.faults:
        print(f"  fault at {hour:05.2f} h: {name}: {note}")
    for i in run.invariants:
        note = f" ({i.note})" if i.note else ""
        print(f"  {'ok  ' if i.violations == 0 else 'FAIL'} {i.name}: {i.violations} of "
              f"{i.checked}{note}")


def main(argv: list[str] | None = None) -> int:
    """Run the day on each backend, print and report it; non-zero if an invariant broke."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--consultations", type=int, default=150)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--seed", type=int, default=1405)
    parser.add_argument("--out", type=Path, default=Path("bench-report"))
    args = parser.parse_args(argv)
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    runs = []
    for backend in backends:
        plan = DayPlan(backend, args.minutes, args.calls, args.consultations, args.seed)
        run = asyncio.run(run_day(plan))
        print_run(run)
        runs.append(run)
    print(f"report: {report(runs, args.out)}")
    return 0 if all(i.violations == 0 for run in runs for i in run.invariants) else 1


if __name__ == "__main__":
    raise SystemExit(main())
