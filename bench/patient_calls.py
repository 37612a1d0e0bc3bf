"""Calls to patients at clinic-group scale: the planner every instance runs each minute, the
claim rate, and reminders rung, answered and confirmed end to end.

Run: python -m bench.patient_calls [--bookings 20000] [--calls 300] [--cap 100] [--sqlite-only]

For SQLite (a temporary file) and PostgreSQL (a throwaway server it starts), on a clinic of
60 doctors open 10:00-14:00 every day in 5-minute slots, it bulk-inserts `--bookings`
bookings over the next seven days, and closes one doctor tomorrow. At 18:00:30 on a
Saturday it times:
- plan: the first planning (reminders due within a day, absence calls) and an idle one
  (nothing new: what each instance pays every minute), against the floor of reading the
  same bookings once (one SELECT of the week's booked appointments);
- claims: claiming every due call, `--cap` at a time (claims per second);
- end to end: `--calls` reminders due at once, dialled by the real dialer (cap `--cap`)
  through the fake PBX in this process (speed 1: real time; patient calls may take the whole
  cap, as no consultation is due), each patient answering after
  0.5 s and pressing 1 on the reminder menu over FastAGI. It prints the seconds until all
  are recorded, calls per second, and the ratio to the floor: ceil(calls / cap) rounds of
  the 0.5 s ring (the flow itself runs in the fake's virtual time).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import functools
import math
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import func, insert, select

from bridge.ami_client import AmiClient
from bridge.dialer import Dialer, Tuning, dial_and_plan
from bridge.outbound import CallPlan
from clinic.schedule import TEHRAN
from db.clinic_sync import load_clinic, record_absence
from db.consultations import ConsultationStore, RetryPolicy
from db.engine import Database
from db.models import Appointment, Doctor, Patient, PatientCall
from db.schema import upgrade
from nobat.bridge_wiring import call_planning, patient_calls
from nobat.config import load_config
from nobat.ivr_wiring import build_line, fastagi_server
from protocol.call_token import call_token
from tests.fakepbx.agi_caller import DIALPLAN_SECRET
from tests.fakepbx.ami_server import FakeAsterisk
from tests.fakepbx.script import Answers, Hear, Phone, Press
from tests.support.clinics import every_day_clinic
from tests.support.postgres import PostgresServer
from tests.support.server import demo_copy

SATURDAY = dt.date(2026, 11, 28)
NOW = dt.datetime.combine(SATURDAY, dt.time(18, 0, 30), TEHRAN).astimezone(dt.UTC)
DOCTORS = 60
SLOTS_PER_DAY = 48
SLOT = dt.timedelta(minutes=5)
CHUNK = 5000
RING = 0.5
LEASE = dt.timedelta(minutes=1)
T = TypeVar("T")


def clock() -> dt.datetime:
    """The benchmark's fixed moment: Saturday 18:00:30 in Tehran."""
    return NOW


def slot(n: int) -> tuple[int, dt.datetime]:
    """Booking n's doctor id and start: doctors fill a day's slots, then the next day."""
    doctor, rest = n % DOCTORS, n // DOCTORS
    day, index = divmod(rest, SLOTS_PER_DAY)
    first = dt.datetime.combine(SATURDAY + dt.timedelta(days=day + 1), dt.time(10), TEHRAN)
    return doctor + 1, (first + SLOT * index).astimezone(dt.UTC)


async def populate(database: Database, bookings: int) -> None:
    """The clinic through the real loader, then `bookings` bookings, each its own patient."""
    await upgrade(database)
    await load_clinic(database, every_day_clinic(SLOTS_PER_DAY, doctors=DOCTORS),
                      clock=lambda: NOW - dt.timedelta(days=1))
    async with database.writing() as session:
        ids = dict((await session.execute(select(Doctor.key, Doctor.id))).all())
    for first in range(0, bookings, CHUNK):
        numbers = range(first, min(bookings, first + CHUNK))
        async with database.writing() as session:
            await session.execute(insert(Patient), [dict(
                id=n + 1, phone=f"+98935{n:07d}", language="fa", created_at=NOW)
                for n in numbers])
            rows = []
            for n in numbers:
                doctor, start = slot(n)
                rows.append(dict(id=n + 1, doctor_id=ids[f"dr-{doctor}"], patient_id=n + 1,
                                 start_at=start, end_at=start + SLOT, kind="in_person",
                                 status="booked", code=f"{n:08d}", created_via="ivr",
                                 created_at=NOW, updated_at=NOW))
            await session.execute(insert(Appointment), rows)


async def timed(work: Awaitable[T]) -> tuple[float, T]:
    """Seconds `work` took, and its result."""
    began = time.perf_counter()
    result = await work
    return time.perf_counter() - began, result


async def planning(url: str, bookings: int, cap: int, folder: Path) -> str:
    """Plan, plan again, the floor read, and the claim rate, on one store."""
    database = Database.from_url(url)
    await populate(database, bookings)
    await record_absence(database, "dr-1", SATURDAY + dt.timedelta(days=1),
                         SATURDAY + dt.timedelta(days=1), "bench")
    config = load_config(demo_copy(folder), env={})
    desk = patient_calls(config, database, CallPlan("x/{number}", "021", "c"),
                         call_planning(config, TEHRAN), clock)
    store = desk.store
    first, planned = await timed(store.plan(desk.planning))
    idle, again = await timed(store.plan(desk.planning))
    assert not again.added

    async def floor() -> int:
        async with database.reading() as session:
            rows = (await session.execute(select(Appointment.id, Appointment.start_at).where(
                Appointment.status == "booked", Appointment.start_at > NOW,
                Appointment.start_at <= NOW + dt.timedelta(days=4)))).all()
        return len(rows)

    read, _ = await timed(floor())
    began, claimed = time.perf_counter(), 0
    while batch := await store.claim_next("bench", LEASE, cap, planning=desk.planning):
        claimed += len(batch)
    claiming = time.perf_counter() - began
    await database.close()
    counts = ", ".join(f"{n} {purpose}" for purpose, n in planned.added.items())
    return (f"  plan {first:.2f} s ({counts}); idle plan {idle * 1000:.0f} ms vs floor read "
            f"{read * 1000:.0f} ms (x{idle / read:.1f}); {claimed} claims in {claiming:.2f} s "
            f"({claimed / claiming:.0f}/s)")


async def end_to_end(url: str, calls: int, cap: int, folder: Path) -> str:
    """`calls` reminders due at once, rung and confirmed through the fake PBX."""
    database = Database.from_url(url)
    await populate(database, calls)
    config = load_config(demo_copy(folder), env={})
    config = dataclasses.replace(config, patient_calls=dataclasses.replace(
        config.patient_calls, max_calls=cap))  # the whole cap: no consultation is due
    line = await build_line(config, database, clock)
    server = fastagi_server(config, line)
    port = await server.start("127.0.0.1", 0)
    phone = Phone("patient", "+989350000000", Answers(RING), "Patient",
                  listens=(Hear("reminder/menu"), Press("1")))
    plan = CallPlan("Local/{exten}@fake-phones/n", "+982188776655", "Clinic",
                    address=lambda number: {"exten": "patient"},
                    call_token=functools.partial(call_token, DIALPLAN_SECRET))
    async with FakeAsterisk(phones=[phone], fastagi=("127.0.0.1", port)) as pbx:
        ami = AmiClient("127.0.0.1", pbx.port, "ctrl", "ctrlsecret", ping_interval=None)
        await ami.start()
        await ami.wait_ready(5.0)
        dialer = Dialer(ConsultationStore(database, clock), ami, lambda _: plan, "bench",
                        RetryPolicy(), Tuning(cap, poll=0.05, lease=dt.timedelta(minutes=10)),
                        clock,
                        patient_calls=patient_calls(config, database, plan,
                                                    call_planning(config, TEHRAN), clock,
                                                    plan_every=0.0))
        began = time.perf_counter()
        task = asyncio.create_task(dial_and_plan(dialer))
        done = 0
        while done < calls and time.perf_counter() - began < 300:
            await asyncio.sleep(0.1)
            async with database.reading() as session:
                done = await session.scalar(select(func.count()).where(
                    PatientCall.state == "done")) or 0
        drain = time.perf_counter() - began
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await dialer.close()
        await ami.close()
    await server.close()
    async with database.reading() as session:
        confirmed = await session.scalar(select(func.count()).where(
            PatientCall.outcome == "confirmed")) or 0
    await database.close()
    floor = math.ceil(calls / cap) * RING
    return (f"  {calls} reminders at cap {cap}: {done} done, {confirmed} confirmed in "
            f"{drain:.1f} s ({done / drain:.0f} calls/s; floor {floor:.1f} s, "
            f"x{drain / floor:.1f})")


async def one_backend(name: str, urls: list[str], options: argparse.Namespace,
                      folder: Path) -> None:
    print(f"{name}:", flush=True)
    print(await planning(urls[0], options.bookings, options.cap, folder), flush=True)
    print(await end_to_end(urls[1], options.calls, options.cap, folder), flush=True)


async def main(options: argparse.Namespace) -> None:
    print(f"patient calls: {options.bookings} bookings over a week, {DOCTORS} doctors, one "
          f"absent tomorrow; {options.calls} reminders rung at cap {options.cap}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        await one_backend("sqlite", [f"sqlite+aiosqlite:///{folder / n}.db" for n in "ab"],
                          options, folder)
        if options.sqlite_only:
            return
        server = PostgresServer().start()
        try:
            await one_backend("postgresql", [await server.create_database(),
                                             await server.create_database()], options, folder)
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bookings", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--cap", type=int, default=100)
    parser.add_argument("--sqlite-only", action="store_true")
    asyncio.run(main(parser.parse_args()))
