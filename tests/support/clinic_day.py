"""A short scripted stretch of a clinic's day through `nobat serve` and the fake PBX, for the
status page's tests: IVR calls over FastAGI, consultations over AMI, bookings through the
booking service, and four weeks of earlier calls for the heatmap."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from clinic.calendar import Weekday
from clinic.clinic_file import read_clinic
from db.booking import BookingService
from db.clinic_sync import load_clinic
from db.engine import Database
from db.models import Consultation, InboundCall
from db.schema import upgrade
from tests.fakepbx.agi_caller import place_call
from tests.fakepbx.ami_server import FakeAsterisk
from tests.fakepbx.script import Answers, Caller, HangUp, Hear, NoAnswer, Phone, Wait
from tests.support.consultations import book_due, first_phone_slot
from tests.support.server import ROOT, ServerProcess, demo_copy

TOKEN = "page-token-5678"
AMI_SECRET = "ami-page-secret"
TEHRAN = ZoneInfo("Asia/Tehran")
HTML_NAME = "<b>Dr. Ali Karimi</b>"
"""Staff data with markup in it: the page must show it as text."""
UPCOMING_PATIENT = "09121112233"
TALKING_PATIENT, SILENT_PATIENT, LONG_PATIENT = "09351110001", "09351110002", "09351110003"
IVR_CALLERS = ("09127770001", "09127770002", "09127770003")
EARLIER_CALLS = {(Weekday.SATURDAY, 10): 6, (Weekday.SUNDAY, 0): 3}
"""Calls placed in the last four weeks (not today), by local weekday and hour."""


@dataclass
class Day:
    """The running server, its store, and the figures the page should show for today."""

    server: ServerProcess
    database: Database
    calls: int
    bookings: int
    cancellations: int
    heatmap: dict[tuple[Weekday, int], int]
    """Expected non-empty heatmap cells."""


async def _consultation_now(service: BookingService, database: Database, doctor_key: str,
                            patient: str, due: dt.datetime) -> int:
    """Book the doctor's first phone slot with its call due at `due`; the appointment's id."""
    doctor_id, start = await first_phone_slot(service, doctor_key)
    appointment, _ = await book_due(service, database, doctor_id, patient, start, due)
    return appointment


async def _earlier_calls(database: Database, today: dt.date) -> None:
    """Calls of the past four weeks, at the weekday and hour EARLIER_CALLS says."""
    async with database.writing() as session:
        for (weekday, hour), count in EARLIER_CALLS.items():
            day = next(today - dt.timedelta(days=n) for n in range(1, 8)
                       if Weekday.of(today - dt.timedelta(days=n)) is weekday)
            for n in range(count):
                started = dt.datetime.combine(day, dt.time(hour, n), TEHRAN)
                session.add(InboundCall(started_at=started, ended_at=started,
                                        caller="+989120000000", language="fa",
                                        outcome="hung_up"))


async def _ivr_calls(server: ServerProcess) -> None:
    """Three callers: one books, one hears the address, one hangs up at the welcome."""
    booker, asker, leaver = IVR_CALLERS
    scripts = [
        Caller.dialling(booker, Hear("main-menu"), "1", Hear("choose-specialty"), "1",
                        Hear("choose-day"), "1", Hear("choose-time"), "1",
                        Hear("confirm-keys"), "1", Hear("anything-else"), "9"),
        Caller.dialling(asker, Hear("main-menu"), "3", Hear("anything-else"), "9"),
        Caller.dialling(leaver, Wait(0.5), HangUp()),
    ]
    for caller in scripts:
        await place_call("127.0.0.1", server.fastagi_port, caller, strict=caller is not scripts[2])


@asynccontextmanager
async def scripted_day(folder: Path) -> AsyncIterator[Day]:
    """Run the scripted stretch and keep the server up for the page to be read."""
    clinic = (ROOT / "clinic.toml").read_text().replace('"Dr. Ali Karimi"', f'"{HTML_NAME}"')
    config = demo_copy(folder, clinic=clinic)
    phones = [Phone("09121002002", "+989121002002", Answers(0.2), "Dr Karimi"),
              Phone("09121002004", "+989121002004", Answers(0.2), "Dr Hosseini"),
              Phone(TALKING_PATIENT, "+989351110001", Answers(0.3, talk=20), "Patient A"),
              Phone(SILENT_PATIENT, "+989351110002", NoAnswer(), "Patient B"),
              Phone("09121002005", "+989121002005", Answers(0.2), "Dr Moradi"),
              Phone(LONG_PATIENT, "+989351110003", Answers(0.3, talk=600), "Patient C")]
    users = {"nobat": (AMI_SECRET, "call,system,user", "call,originate,reporting")}
    async with FakeAsterisk(users=users, phones=phones, speed=0.1) as pbx:
        text = config.read_text().replace("port = 5038", f"port = {pbx.port}")
        text = text.replace('dial = "PJSIP/{national}@clinic-trunk"',
                            'dial = "Local/{national}@fake-phones/n"')
        text = text.replace("attempts = 3", "attempts = 1").replace("ring_seconds = 45",
                                                                   "ring_seconds = 5")
        config.write_text(text.replace("poll_seconds = 5", "poll_seconds = 0.2"))
        database = Database.from_url(f"sqlite+aiosqlite:///{folder / 'nobat.db'}")
        await upgrade(database)
        await load_clinic(database, read_clinic(folder / "clinic.toml"))
        service = BookingService(database)
        now = dt.datetime.now(dt.UTC)
        today = now.astimezone(TEHRAN).date()
        await _earlier_calls(database, today)
        past = now - dt.timedelta(seconds=5)
        await _consultation_now(service, database, "dr-karimi", TALKING_PATIENT, past)
        await _consultation_now(service, database, "dr-hosseini", SILENT_PATIENT, past)
        await _consultation_now(service, database, "dr-moradi", LONG_PATIENT, past)
        later = now + dt.timedelta(hours=2)
        await _consultation_now(service, database, "dr-karimi", UPCOMING_PATIENT, later)
        changed_mind = await _consultation_now(service, database, "dr-moradi",
                                               UPCOMING_PATIENT, later)
        await service.cancel(changed_mind, UPCOMING_PATIENT, via="staff")
        server = await ServerProcess(config, env={"NOBAT_WEB_TOKEN": TOKEN,
                                                  "NOBAT_AMI_SECRET": AMI_SECRET}).start()
        try:
            await _ivr_calls(server)
            await _until_settled(database)
            local_hour = dt.datetime.now(TEHRAN)
            heatmap = {key: count for key, count in EARLIER_CALLS.items()}
            here = (Weekday.of(local_hour.date()), local_hour.hour)
            heatmap[here] = heatmap.get(here, 0) + len(IVR_CALLERS)
            yield Day(server, database, calls=len(IVR_CALLERS), bookings=6, cancellations=1,
                      heatmap=heatmap)
        finally:
            assert await server.stop() == 0
            await database.close()


async def _until_settled(database: Database, seconds: float = 30.0) -> None:
    """Wait until two due consultations are over, the third is talking, and every IVR
    call is logged."""
    async with asyncio.timeout(seconds):
        while True:
            async with database.reading() as session:
                states = (await session.scalars(select(Consultation.state))).all()
                logged = len((await session.scalars(select(InboundCall.id))).all())
            over = {"completed", "missed", "bridged"} <= set(states)
            if over and logged >= len(IVR_CALLERS) + sum(EARLIER_CALLS.values()):
                return
            await asyncio.sleep(0.1)
