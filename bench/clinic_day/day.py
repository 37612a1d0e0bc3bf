"""One simulated day against one backend: nobat serve, the fake PBX, the callers, the faults."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import re
import signal
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
from sqlalchemy import func, select

from bench.clinic_day.callers import (
    CALL_WEIGHTS,
    CONSULTATION_WEIGHTS,
    MIDNIGHT_RUSH_SECONDS,
    Booking,
    action_seconds,
    arrivals,
    script,
)
from bench.clinic_day.invariants import (
    caller_id_invariant,
    consultation_invariants,
    legs_invariant,
    memory_invariants,
    unlogged_invariant,
    unreached_invariant,
)
from bench.clinic_day.records import (
    DAY_SECONDS,
    AttemptRow,
    CallResult,
    ConsultationRow,
    DayPlan,
    DayRun,
    Invariant,
    MemorySample,
    Outage,
)
from clinic.clinic_file import ClinicSpec, read_clinic, read_clinics
from clinic.phones import national, normalize
from clinic.schedule import VisitKind
from db.booking import BookingService
from db.clinic_sync import load_clinic
from db.engine import Database
from db.models import Appointment, CallAttempt, Clinic, Consultation, Doctor, InboundCall, Patient
from db.schema import upgrade
from nobat.clinic_loading import load_clinics
from tests.fakepbx.agi_caller import CallTranscript, place_call
from tests.fakepbx.ami_server import FakeAsterisk, nobat_user
from tests.fakepbx.script import (
    Answers,
    Busy,
    Caller,
    NoAnswer,
    Phone,
    PhoneBehaviour,
)
from tests.support.clinics import second_practice
from tests.support.consultations import book_due
from tests.support.postgres import PostgresServer
from tests.support.server import ServerProcess, demo_copy, dial_fake_pbx, edit_config

TEHRAN = ZoneInfo("Asia/Tehran")


FAULTS = (("ami_drop", 9.5), ("malformed_burst", 11.0), ("database", 13.0),
          ("asterisk_restart", 16.5), ("nobat_restart", 17.5))
"""Which fault hits at which hour of the simulated day."""


AMI_SECRET = "day-ami-secret"
WEB_TOKEN = "clinic-day-bench-R4t8"
"""A status page token `nobat serve` accepts (web/token_strength.py)."""


PBX_SPEED = 0.05
"""Real seconds per scripted second at the fake PBX: a 60 s consultation talks 3 s."""


SETTLE_SECONDS = 90.0


def practice_text(n: int, demo: str) -> str:
    """Practice n (from 1) of a day of several: the demo clinic under its own key, names,
    number and DID (021 5566 000n) and card codes, its doctors on phones of their own."""
    text = second_practice(f"practice-{n}", f"021 5566 {n:04d}", str(n + 1),
                           (f"مطب {n}", f"Practice {n}"), demo)
    return re.sub(r'(?m)^phone = "0912 100 (\d{4})"', rf'phone = "0912 1{n:02d} \1"', text)


class Day:
    """Runs one simulated day against one backend."""

    def __init__(self, plan: DayPlan, folder: Path, url: str,
                 postgres: PostgresServer | None) -> None:
        self.plan, self.folder, self.url, self.postgres = plan, folder, url, postgres
        self.rng = random.Random(plan.seed)
        self.run = DayRun(plan)
        self.scale = DAY_SECONDS / (plan.wall_minutes * 60)
        self.started = 0.0
        self.booked: list[Booking] = []
        """Each booking a caller heard confirmed."""
        self.numbers: list[str | None] = [None]
        """The practices' numbers callers dial (None: the one practice's line, no number)."""
        self.practice_of: dict[int, tuple[str, str]] = {}
        """Each consultation's practice's number (E.164) and the name its calls show."""
        self.home = ""
        """The first practice's number: the one a caller who dials none reaches."""
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
        # The day is about the line and the consultations (with their in-call survey); the
        # reminder and absence calls the real clock would plan are left out.
        dial_fake_pbx(self.config, pbx.port, ("ring_seconds = 45", "ring_seconds = 5"),
                      ("attempts = 3", "attempts = 2"), ("retry_minutes = 2", "retry_minutes = 1"),
                      ("poll_seconds = 5", "poll_seconds = 0.2"),
                      ("reminders = true", "reminders = false"),
                      ("absence_calls = true", "absence_calls = false"),
                      ('url = "sqlite+aiosqlite:///nobat.db"', f'url = "{self.url}"'),
                      ("watch_seconds = 2", "watch_seconds = 0"))
        await upgrade(database)
        practices = await self._practices(database)
        self.home = practices[0].phone
        due = arrivals(self.rng, self.plan.consultations, CONSULTATION_WEIGHTS)
        each = []
        for practice in practices:
            service = BookingService(database, practice=practice.key)
            slots = []
            for doctor in await service.doctors():
                for day in await service.next_free_days(doctor.id, limit=60):
                    slots += [(practice, service, doctor.id, s.start)
                              for s in await service.free_slots(doctor.id, day)
                              if VisitKind.PHONE in s.kinds]
            self.rng.shuffle(slots)
            each.append(slots)
        # the practices in turn, so each has its share of the day's consultations
        turns = [slot for turn in itertools.zip_longest(*each) for slot in turn if slot]
        for n, (simulated, (practice, service, doctor_id, start)) in enumerate(
                zip(due, turns, strict=False)):
            patient = f"0935{n:07d}"
            pbx.phones[patient] = Phone(patient, "+98" + patient[1:], self._behaviour(),
                                        f"Patient {n}")
            _, consultation = await book_due(service, database, doctor_id, patient, start,
                                             self.real_time(simulated))
            self.consultation_ids.append(consultation)
            self.practice_of[consultation] = (normalize(practice.phone),
                                              practice.name_en or practice.name)
        for spec in (doctor for practice in practices for doctor in practice.doctors):
            number = normalize(spec.phone)
            pbx.phones[national(number)] = Phone(national(number), number, Answers(1.0),
                                                 spec.key)

    async def _practices(self, database: Database) -> list[ClinicSpec]:
        """The clinic file loaded; for several practices, a folder of them served as one
        line, each reached by its own number."""
        if self.plan.practices == 1:
            spec = read_clinic(self.folder / "clinic.toml")
            await load_clinic(database, spec)
            return [spec]
        clinics = self.folder / "clinics"
        clinics.mkdir()
        demo = (self.folder / "clinic.toml").read_text(encoding="utf-8")
        for n in range(self.plan.practices):
            (clinics / f"practice-{n:02d}.toml").write_text(
                practice_text(n, demo) if n else demo, encoding="utf-8")
        edit_config(self.config, ('clinic_file = "clinic.toml"', 'clinic_file = "clinics"'))
        failed = [load for load in await load_clinics(database, clinics) if load.failure]
        if failed:
            raise RuntimeError(f"the day's clinic folder did not load: {failed}")
        practices = read_clinics(clinics)
        self.numbers = [national(practice.numbers[0]) for practice in practices]
        return practices

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
        kind, number, steps, dialled = script(self.rng, self.booked, self.numbers)
        turnaround: list[float] = []
        result = CallResult(simulated, kind, number, [], turnaround, 0.0,
                            began=time.monotonic(), dialled=dialled)
        server = self.server
        try:
            assert server is not None
            transcript: CallTranscript = await place_call(
                "127.0.0.1", server.fastagi_port, Caller.dialling(number, *steps,
                                                                  dialled=dialled),
                strict=False, turnaround=turnaround, stall_seconds=30)
            result.prompts, result.ended_by = transcript.prompts, transcript.hung_up_by
            result.action_seconds = action_seconds(transcript, turnaround)
        except (OSError, TimeoutError, AssertionError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        result.ended = time.monotonic()
        result.seconds = result.ended - result.began
        if kind == "book" and result.codes():
            self.booked.append(Booking(number, result.codes()[0], dialled))
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
                                                       "NOBAT_WEB_TOKEN": WEB_TOKEN}).start()
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
        users = nobat_user(AMI_SECRET)
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
        found.append(caller_id_invariant(attempts, pbx, self.practice_of))
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
            appointments = await session.scalar(select(func.count()).select_from(Appointment))
            rows = await session.execute(
                select(Patient.phone, Appointment.code, Clinic.phone)
                .join(Patient, Appointment.patient_id == Patient.id)
                .join(Doctor, Appointment.doctor_id == Doctor.id)
                .join(Clinic, Doctor.clinic_id == Clinic.id)
                .where(Appointment.created_via == "ivr"))
            placed = {(phone, code): number for phone, code, number in rows}
        heard = {code for call in self.run.calls for code in call.codes()}
        stored = {code for _, code in placed}
        booked = {(normalize(call.caller), code): normalize(call.dialled or self.home)
                  for call in self.run.calls for code in call.codes()}
        elsewhere = [code for (caller, code), dialled in booked.items()
                     if placed.get((caller, code), dialled) != dialled]
        return [Invariant("double bookings", len(doubles), appointments or 0),
                Invariant("bookings heard confirmed but not stored", len(heard - stored),
                          len(heard)),
                Invariant("IVR bookings stored but never confirmed to a caller",
                          len(stored - heard), len(stored)),
                Invariant("IVR bookings at a practice other than the one dialled",
                          len(elsewhere), len(booked), ", ".join(elsewhere[:3]))]

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
                headers={"Authorization": f"Bearer {WEB_TOKEN}"}) as reply:
            body = await reply.json()
        return len(body["live_calls"])


def utc_at(moment: float) -> dt.datetime:
    """The UTC instant a reading of the monotonic clock falls on."""
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=moment - time.monotonic())


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
