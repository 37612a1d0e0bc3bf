"""A clinic's day compressed into minutes, through `nobat serve` and the fake PBX, with faults.

Run: python -m bench.clinic_day [--minutes 10] [--calls 3000] [--consultations 150]
     [--backend sqlite|postgresql|both] [--seed 1405] [--out bench-report]

A Saturday-sized day (Saturday is the week's first and busiest day) runs in `--minutes` of
wall time: inbound calls peak 10:00-12:00 with a spike at 00:00 when the next day's slots
open; consultations come due through the afternoon, peaking 16:00-18:00. Callers book,
move and cancel their bookings, ask for hours and the address, hang up at random steps and
press wrong keys, each over a real FastAGI socket; consultations ring fake phones that
answer, talk, stay silent or are busy, over AMI. Faults hit the run on schedule: the AMI
link dropped, Asterisk restarted, nobat killed (SIGKILL) and started again, the database
locked (SQLite) or restarted (PostgreSQL), and a burst of malformed FastAGI clients.

At the end it checks the invariants and prints each with its count, then writes a Markdown
report and a PNG chart (calls and per-command turnaround per hour, faults marked) into
`--out`. The test suite runs a short version (tests/test_clinic_day.py).
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
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
from sqlalchemy import func, select

from clinic.clinic_file import read_clinic
from clinic.phones import national, normalize
from clinic.schedule import VisitKind
from db.booking import BookingService
from db.clinic_sync import load_clinic
from db.engine import Database
from db.models import Appointment, CallAttempt, Consultation, InboundCall
from db.schema import upgrade
from tests.fakepbx.agi_caller import CallTranscript, place_call
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
CONSULTATION_WEIGHTS = (0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 1, 2, 3, 4, 6, 6, 5, 3, 2, 1, 0, 0)
"""Consultations due per hour, relative: through the afternoon, peaking 16-18."""
FAULTS = (("ami_drop", 9.5), ("malformed_burst", 11.0), ("database", 13.0),
          ("asterisk_restart", 16.5), ("nobat_restart", 17.5))
"""Which fault hits at which hour of the simulated day."""
AMI_SECRET = "day-ami-secret"
PBX_SPEED = 0.05
"""Real seconds per scripted second at the fake PBX: a 60 s consultation talks 3 s."""
SETTLE_SECONDS = 90.0


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

    hour: int
    kind: str
    caller: str
    prompts: list[str]
    turnaround: list[float]
    seconds: float
    error: str | None = None

    def heard(self, name: str) -> bool:
        return any(p.endswith("/" + name) for p in self.prompts)

    def codes(self) -> list[str]:
        """Booking codes read out to the caller after "your-code"."""
        found = []
        for index, prompt in enumerate(self.prompts):
            if prompt.endswith("/your-code"):
                digits = [re.search(r"/num/(\d)$", p) for p in self.prompts[index + 1:index + 7]]
                if all(digits):
                    found.append("".join(d.group(1) for d in digits if d))
        return found


@dataclass
class DayRun:
    """Everything measured, for the invariants and the report."""

    plan: DayPlan
    calls: list[CallResult] = field(default_factory=list)
    faults: list[tuple[str, float, str]] = field(default_factory=list)
    """(fault, simulated hour, what happened)."""
    rss: list[tuple[float, float]] = field(default_factory=list)
    """(simulated hour, nobat's resident memory in MB)."""
    invariants: list[tuple[str, int, int]] = field(default_factory=list)
    """(invariant, violations, checked)."""
    wall_seconds: float = 0.0


def arrivals(rng: random.Random, count: int, weights: tuple[float, ...]) -> list[float]:
    """`count` simulated seconds spread over the day by hourly `weights`, sorted."""
    hours = rng.choices(range(24), weights=weights, k=count)
    return sorted(hour * 3600 + rng.random() * 3600 for hour in hours)


Steps = tuple[CallerAction | str, ...]
BOOK: Steps = (
    Hear("main-menu"), "1", Hear("choose-specialty"), "1", Hear("choose-day"), "1",
    Hear("choose-time"), "1", Hear("confirm-keys"), "1", Hear("anything-else"), "9")


def script(rng: random.Random, booked: list[str]) -> tuple[str, str, Steps]:
    """A caller's number and what they do, by the day's mix."""
    roll = rng.random()
    if booked and roll < 0.10:
        return "cancel", rng.choice(booked), (
            Hear("main-menu"), "2", Hear("choose-appointment"), "1", Hear("cancel-it"), "1",
            Hear("confirm-keys"), "1", Hear("anything-else"), "9")
    if booked and roll < 0.18:
        return "move", rng.choice(booked), (
            Hear("main-menu"), "2", Hear("choose-appointment"), "1", Hear("move-it"), "2",
            Hear("choose-day"), "1", Hear("choose-time"), "1", Hear("confirm-keys"), "1",
            Hear("anything-else"), "9")
    number = f"0912{rng.randrange(10_000_000):07d}"
    if roll < 0.55:
        return "book", number, BOOK
    if roll < 0.68:
        return "hours", number, (Hear("main-menu"), "4", Hear("anything-else"), "9")
    if roll < 0.78:
        return "address", number, (Hear("main-menu"), "3", Hear("anything-else"), "9")
    if roll < 0.92:
        cut = rng.randrange(1, len(BOOK) - 2)
        return "hang_up", number, (*BOOK[:cut], Wait(rng.random() * 3), HangUp())
    return "wrong_keys", number, (Hear("main-menu"), "7", Hear("main-menu-short"), "8",
                                  Hear("main-menu-short"), "9")


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
        roll = self.rng.random()
        if roll < 0.08:
            return NoAnswer()
        if roll < 0.13:
            return Busy()
        return Answers(self.rng.uniform(1, 4), talk=self.rng.uniform(60, 300))

    def real_time(self, simulated: float) -> dt.datetime:
        """The wall-clock instant a simulated second of the day falls on."""
        return dt.datetime.now(dt.UTC) + dt.timedelta(
            seconds=self.started + simulated / self.scale - time.monotonic())

    async def call(self, simulated: float) -> None:
        """One inbound caller at their moment of the day."""
        await self.at(simulated)
        kind, number, steps = script(self.rng, self.booked)
        turnaround: list[float] = []
        began = time.perf_counter()
        result = CallResult(int(simulated // 3600), kind, number, [], turnaround, 0.0)
        server = self.server
        try:
            assert server is not None
            transcript: CallTranscript = await place_call(
                "127.0.0.1", server.fastagi_port, Caller.dialling(number, *steps),
                strict=False, turnaround=turnaround, stall_seconds=30)
            result.prompts = transcript.prompts
        except (OSError, TimeoutError, AssertionError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        result.seconds = time.perf_counter() - began
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
        assert self.server is not None and self.server.process is not None
        self.server.process.send_signal(signal.SIGKILL)
        await self.server.process.wait()
        self.server = await self._start_server()
        return "nobat killed with SIGKILL and started again"

    async def _start_server(self) -> ServerProcess:
        """Start nobat; the PBX's in-call surveys reach its new FastAGI port."""
        server = await ServerProcess(self.config, env={"NOBAT_AMI_SECRET": AMI_SECRET,
                                                       "NOBAT_WEB_TOKEN": "day"}).start()
        if self.pbx is not None:
            self.pbx.fastagi = ("127.0.0.1", server.fastagi_port)
        return server

    async def sample_memory(self) -> None:
        """nobat's RSS every simulated hour (none while it is being restarted)."""
        for hour in range(1, 25):
            await self.at(hour * 3600 - 1)
            rss = self._rss()
            if rss is not None:
                self.run.rss.append((hour, rss))

    def _rss(self) -> float | None:
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
            work: list[Awaitable[None]] = [
                self.call(s) for s in arrivals(self.rng, self.plan.calls, CALL_WEIGHTS)]
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
        add = self.run.invariants.append
        async with database.reading() as session:
            doubles = (await session.execute(
                select(Appointment.doctor_id, Appointment.start_at, func.count())
                .where(Appointment.status != "cancelled")
                .group_by(Appointment.doctor_id, Appointment.start_at)
                .having(func.count() > 1))).all()
            appointments = (await session.execute(
                select(Appointment.code, Appointment.created_via))).all()
            states = dict((await session.execute(
                select(Consultation.id, Consultation.state)
                .where(Consultation.id.in_(self.consultation_ids)))).all())
            causes = dict((await session.execute(
                select(Consultation.id, Consultation.cause)
                .where(Consultation.state == "missed"))).all())
            attempts = (await session.execute(
                select(CallAttempt.doctor_channel_id, CallAttempt.patient_channel_id))).all()
            open_calls = await session.scalar(select(func.count()).select_from(InboundCall)
                                              .where(InboundCall.ended_at.is_(None)))
            logged = await session.scalar(select(func.count()).select_from(InboundCall))
        add(("double bookings", len(doubles), len(appointments)))
        heard = {code for call in self.run.calls for code in call.codes()}
        stored = {code for code, via in appointments if via == "ivr"}
        add(("bookings heard confirmed but not stored", len(heard - stored), len(heard)))
        add(("IVR bookings stored but never confirmed to a caller", len(stored - heard),
             len(stored)))
        originates = Counter(a.fields.get("ChannelId") for s in pbx.sessions for a in s.actions
                             if a.name == "Originate")
        legs = [channel for row in attempts for channel in row]
        add(("legs originated other than exactly once per attempt",
             sum(1 for leg in legs if originates[leg] != 1), len(legs)))
        unsettled = [i for i, state in states.items() if state not in ("completed", "missed")]
        add(("consultations not completed or missed with a cause",
             len(unsettled) + sum(1 for i, s in states.items()
                                  if s == "missed" and not causes.get(i)), len(states)))
        add(("calls left open in the call log", open_calls or 0, logged or 0))
        live = await self._live_calls()
        add(("IVR sessions still open at nobat", live, 1))
        restart = next((h for name, h, _ in self.run.faults if name == "nobat_restart"), 0.0)
        after = [(h, mb) for h, mb in self.run.rss if h >= max(2.0, restart + 1)]
        if len(after) >= 2:
            first, last = after[0][1], after[-1][1]
            add((f"memory more than 10% above its warmed-up size ({first:.0f} MB at "
                 f"{after[0][0]:.0f} h, {last:.0f} MB at the end)", int(last > first * 1.10), 1))
        failed_calls = [c for c in self.run.calls if c.error]
        add(("inbound calls that could not reach nobat (outside the restart)",
             sum(1 for c in failed_calls if not self._near_restart(c)), len(self.run.calls)))

    def _near_restart(self, call: CallResult) -> bool:
        restart = next((h for name, h, _ in self.run.faults if name == "nobat_restart"), None)
        return restart is not None and abs(call.hour - restart) <= 1

    async def _live_calls(self) -> int:
        assert self.server is not None
        async with aiohttp.ClientSession() as http, http.get(
                self.server.base_url + "/api/status",
                headers={"Authorization": "Bearer day"}) as reply:
            body = await reply.json()
        return len(body["live_calls"])


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of values, 0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(run: DayRun) -> dict[str, float]:
    """The headline figures of one run."""
    turn = [t * 1000 for c in run.calls for t in c.turnaround]
    booking = [c.seconds * 1000 for c in run.calls if c.kind == "book" and c.codes()]
    return {"calls": len(run.calls), "calls_per_s": len(run.calls) / max(run.wall_seconds, 1e-9),
            "turn_p50": percentile(turn, 50), "turn_p99": percentile(turn, 99),
            "booking_p50": percentile(booking, 50), "booking_p99": percentile(booking, 99),
            "bookings": len(booking)}


def report(runs: list[DayRun], out: Path) -> Path:
    """Write report.md and day.png into `out`; return the Markdown's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for run in runs:
        per_hour: dict[int, list[CallResult]] = defaultdict(list)
        for call in run.calls:
            per_hour[call.hour].append(call)
        hours = list(range(24))
        axes[0].plot(hours, [len(per_hour[h]) for h in hours], marker="o",
                     label=run.plan.backend)
        axes[1].plot(hours, [percentile([t * 1000 for c in per_hour[h] for t in c.turnaround],
                                        99) for h in hours], marker="o",
                     label=f"{run.plan.backend} p99")
        axes[1].plot(hours, [percentile([t * 1000 for c in per_hour[h] for t in c.turnaround],
                                        50) for h in hours], linestyle="--",
                     label=f"{run.plan.backend} p50")
    for name, hour, _ in runs[0].faults:
        for ax in axes:
            ax.axvline(hour, color="grey", linestyle=":")
        axes[0].annotate(name.replace("_", " "), (hour, 0), rotation=90, fontsize=7,
                         va="bottom")
    axes[0].set_ylabel("inbound calls per hour")
    axes[1].set_ylabel("per-command turnaround, ms")
    axes[1].set_xlabel("hour of the simulated Saturday (Asia/Tehran)")
    axes[0].legend()
    axes[1].legend()
    figure.tight_layout()
    figure.savefig(out / "day.png", dpi=110)
    plt.close(figure)
    lines = ["# nobat: a simulated clinic day", "",
             f"A Saturday compressed into {runs[0].plan.wall_minutes:g} minutes of wall time "
             f"(seed {runs[0].plan.seed}): {runs[0].plan.calls} inbound calls and "
             f"{runs[0].plan.consultations} phone consultations, through `nobat serve`, the "
             "fake PBX over real FastAGI and AMI sockets, and the real database.", "",
             "![calls and turnaround per hour, faults marked](day.png)", "",
             "| backend | calls | calls/s | turnaround p50 ms | p99 ms | IVR bookings | "
             "booking call p50 ms | p99 ms | wall s |", "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        s = summary(run)
        lines.append(f"| {run.plan.backend} | {s['calls']:.0f} | {s['calls_per_s']:.1f} | "
                     f"{s['turn_p50']:.1f} | {s['turn_p99']:.1f} | {s['bookings']:.0f} | "
                     f"{s['booking_p50']:.0f} | {s['booking_p99']:.0f} | "
                     f"{run.wall_seconds:.0f} |")
    for run in runs:
        lines += ["", f"## {run.plan.backend}", "", "Faults:", ""]
        lines += [f"- {hour:05.2f} h: {name}: {note}" for name, hour, note in run.faults]
        lines += ["", "| invariant | violations | checked |", "|---|---|---|"]
        lines += [f"| {name} | {bad} | {checked} |" for name, bad, checked in run.invariants]
        kinds = Counter(c.kind for c in run.calls)
        lines += ["", "Calls by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())),
                  "", "nobat's memory (MB) by hour: " + ", ".join(
                      f"{h:.0f}h {mb:.0f}" for h, mb in run.rss)]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


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
    s = summary(run)
    print(f"{run.plan.backend}: {s['calls']:.0f} calls in {run.wall_seconds:.0f} s "
          f"({s['calls_per_s']:.1f}/s); turnaround p50 {s['turn_p50']:.1f} ms p99 "
          f"{s['turn_p99']:.1f} ms; booking calls p50 {s['booking_p50']:.0f} ms p99 "
          f"{s['booking_p99']:.0f} ms ({s['bookings']:.0f} booked)")
    for name, hour, note in run.faults:
        print(f"  fault at {hour:05.2f} h: {name}: {note}")
    for name, bad, checked in run.invariants:
        print(f"  {'ok  ' if bad == 0 else 'FAIL'} {name}: {bad} of {checked}")


def main(argv: list[str] | None = None) -> int:
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
    return 0 if all(bad == 0 for run in runs for _, bad, _ in run.invariants) else 1


if __name__ == "__main__":
    raise SystemExit(main())
