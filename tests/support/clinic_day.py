"""A short scripted stretch of a clinic's day through `nobat serve` and the fake PBX, for the
status page's tests: IVR calls over FastAGI, consultations over AMI, bookings through the
booking service, four weeks of earlier calls for the heatmap, and a consultation talked
through on an earlier day for the minutes by day."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from clinic.calendar import Weekday
from db.booking import BookingService
from db.consultations import ConsultationStore
from db.engine import Database
from db.models import Consultation, InboundCall
from tests.fakepbx.agi_caller import place_call
from tests.fakepbx.ami_server import FakeAsterisk, nobat_user
from tests.fakepbx.script import Answers, Caller, HangUp, Hear, NoAnswer, Phone, Wait
from tests.support.consultations import book_due, first_phone_slot
from tests.support.server import ROOT, ServerProcess, demo_copy, demo_store, dial_fake_pbx

TOKEN = "page-token-5678-Qx7v"
AMI_SECRET = "ami-page-secret"
TEHRAN = ZoneInfo("Asia/Tehran")
HTML_NAME = "<img src=x onerror=alert(1)>Dr. Ali Karimi"
"""Staff data with markup in it: the page must show it as text (as markup, it would run)."""
UPCOMING_PATIENT = "09121112233"
TALKING_PATIENT, SILENT_PATIENT, LONG_PATIENT = "09351110001", "09351110002", "09351110003"
EARLIER_PATIENT = "09351110004"
IVR_CALLERS = ("09127770001", "09127770002", "09127770003")
EARLIER_CALLS = {(Weekday.SATURDAY, 10): 6, (Weekday.SUNDAY, 0): 3}
"""Calls placed in the last four weeks (not today), by local weekday and hour."""
EARLIER_TALK = 270
"""Seconds talked in a consultation on the last Saturday before today (4.5 minutes)."""


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
    here: tuple[Weekday, int]
    """Today's cell in the heatmap: the weekday and hour the IVR calls came in."""
    earlier: dict[Weekday, dt.date]
    """The days EARLIER_CALLS were placed on."""
    minutes: dict[dt.date, float]
    """Consultation minutes of earlier days (each other day talked ~0)."""
    ivr_turnarounds: int
    """Commands nobat sent the IVR callers after an AGI reply (each one's wait is timed)."""


def earlier_day(today: dt.date, weekday: Weekday) -> dt.date:
    """The last day before today that falls on `weekday`."""
    return next(today - dt.timedelta(days=n) for n in range(1, 8)
                if Weekday.of(today - dt.timedelta(days=n)) is weekday)


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
            day = earlier_day(today, weekday)
            for n in range(count):
                started = dt.datetime.combine(day, dt.time(hour, n), TEHRAN)
                session.add(InboundCall(started_at=started, ended_at=started,
                                        caller="+989120000000", language="fa",
                                        outcome="hung_up"))


async def _talked_through(service: BookingService, database: Database, day: dt.date
                          ) -> None:
    """A consultation dialled, bridged and completed on an earlier day, EARLIER_TALK long,
    written by the consultation store as the dialer writes it (its clock on that day)."""
    began = dt.datetime.combine(day, dt.time(11), TEHRAN)
    doctor_id, start = await first_phone_slot(service, "dr-rahimi")
    _, ident = await book_due(service, database, doctor_id, EARLIER_PATIENT, start, began)
    store = ConsultationStore(database, clock=lambda: began)
    claim = await store.claim(ident, "earlier-day", dt.timedelta(minutes=30))
    assert claim is not None
    bridged = began + dt.timedelta(seconds=20)
    await store.bridged(claim, bridged)
    await store.completed(claim, bridged + dt.timedelta(seconds=EARLIER_TALK), EARLIER_TALK)


async def _ivr_calls(server: ServerProcess) -> int:
    """Three callers: one books, one hears the address, one hangs up at the welcome;
    returns how many commands followed a reply."""
    booker, asker, leaver = IVR_CALLERS
    scripts = [
        Caller.dialling(booker, Hear("main-menu"), "1", Hear("choose-specialty"), "1",
                        Hear("choose-day"), "1", Hear("choose-time"), "1",
                        Hear("confirm-keys"), "1", Hear("anything-else"), "9"),
        Caller.dialling(asker, Hear("main-menu"), "3", Hear("anything-else"), "9"),
        Caller.dialling(leaver, Wait(0.5), HangUp()),
    ]
    followed = 0
    for caller in scripts:
        waits: list[float] = []
        await place_call("127.0.0.1", server.fastagi_port, caller,
                         strict=caller is not scripts[2], turnaround=waits)
        followed += len(waits) - 1  # the first command follows the environment
    return followed


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
    users = nobat_user(AMI_SECRET)
    async with FakeAsterisk(users=users, phones=phones, speed=0.1) as pbx:
        dial_fake_pbx(config, pbx.port, ("attempts = 3", "attempts = 1"),
                      ("ring_seconds = 45", "ring_seconds = 5"),
                      ("poll_seconds = 5", "poll_seconds = 0.2"))
        database = await demo_store(folder)
        service = BookingService(database)
        now = dt.datetime.now(dt.UTC)
        today = now.astimezone(TEHRAN).date()
        await _earlier_calls(database, today)
        saturday = earlier_day(today, Weekday.SATURDAY)
        await _talked_through(service, database, saturday)
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
            turnarounds = await _ivr_calls(server)
            await _until_settled(database)
            local_hour = dt.datetime.now(TEHRAN)
            heatmap = {key: count for key, count in EARLIER_CALLS.items()}
            here = (Weekday.of(local_hour.date()), local_hour.hour)
            heatmap[here] = heatmap.get(here, 0) + len(IVR_CALLERS)
            yield Day(server, database, calls=len(IVR_CALLERS), bookings=7, cancellations=1,
                      heatmap=heatmap, here=here,
                      earlier={w: earlier_day(today, w) for w, _ in EARLIER_CALLS},
                      minutes={saturday: round(EARLIER_TALK / 60, 1)},
                      ivr_turnarounds=turnarounds)
        finally:
            assert await server.stop() == 0
            await database.close()


async def _until_settled(database: Database, seconds: float = 30.0) -> None:
    """Wait until two due consultations are over, the third is talking, and every IVR
    call is logged (the earlier day's consultation was completed before the server ran)."""
    async with asyncio.timeout(seconds):
        while True:
            async with database.reading() as session:
                states = Counter((await session.scalars(select(Consultation.state))).all())
                logged = len((await session.scalars(select(InboundCall.id))).all())
            over = states["completed"] >= 2 and states["missed"] and states["bridged"]
            if over and logged >= len(IVR_CALLERS) + sum(EARLIER_CALLS.values()):
                return
            await asyncio.sleep(0.1)
