"""Booking writes that nobody contests: the booking's write path against a bare insert.

Run: python -m bench.booking_writes [--doctors 5] [--at-once 50] [--runs 3]

On a SQLite file and on a throwaway PostgreSQL server, each run on a fresh store: every free
slot of tomorrow of `--doctors` doctors (190 five-minute slots each) is booked by a caller of
its own (a new patient) through BookingService, `--at-once` bookings at a time, in one
process with `nobat serve`'s pool (10 connections). The floor, in the same run and store:
as many transactions that each insert one appointment row and nothing else. It prints
bookings/s and this process's CPU per booking beside the floor's, with the ratio (booking /
floor; for bookings/s floor / booking, so that over 1 is worse everywhere).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from bench.ivr_load import many
from clinic.schedule import VisitKind
from db.booking import Booked, BookingService
from db.clinic_sync import load_clinic
from db.engine import Database
from db.models import Appointment, Patient
from db.schema import upgrade
from tests.support.clinics import every_day_clinic, tomorrow_tehran
from tests.support.postgres import PostgresServer

SLOTS = 190
"""Five-minute slots a doctor has from 08:00, the most one day holds."""
POOL = 10
"""`[database] pool_size` as config.toml ships it."""


@dataclass(frozen=True)
class Timed:
    """Writes done, their wall seconds and this process's CPU seconds."""

    writes: int
    seconds: float
    cpu: float

    @property
    def per_second(self) -> float:
        """Writes a second."""
        return self.writes / self.seconds

    @property
    def cpu_ms(self) -> float:
        """This process's CPU milliseconds a write."""
        return self.cpu / self.writes * 1000


async def timed(count: int, at_once: int, write: Callable[[int], Awaitable[None]]) -> Timed:
    """Run write(0) .. write(count - 1), `at_once` at a time."""
    async def one(n: int) -> int:
        await write(n)
        return 1

    cpu = time.process_time()
    seconds, writes = await many(count, at_once, one)
    return Timed(writes, seconds, time.process_time() - cpu)


async def one_run(url: str, doctors: int, at_once: int) -> tuple[Timed, Timed]:
    """The bookings, then the floor, on the fresh store at `url`."""
    database = Database.from_url(url, pool_size=POOL)
    try:
        await upgrade(database)
        await load_clinic(database, every_day_clinic(SLOTS, doctors=doctors))
        service = BookingService(database)
        slots = [(doctor.id, slot.start) for doctor in await service.doctors()
                 for slot in await service.free_slots(doctor.id, tomorrow_tehran())]

        async def book(n: int) -> None:
            doctor, start = slots[n]
            result = await service.book(f"0912{n:07d}", doctor, start, VisitKind.IN_PERSON)
            if not isinstance(result, Booked):
                raise RuntimeError(f"slot {start} not booked: {result}")

        async def bare_insert(n: int) -> None:
            """One transaction inserting one appointment row (of one patient, a day later
            than the booking's slot, its code below any booking's): the least a booking can
            cost."""
            doctor, start = slots[n]
            later = start + dt.timedelta(days=1)

            async def write(session: AsyncSession) -> None:
                await session.execute(insert(Appointment).values(
                    doctor_id=doctor, patient_id=select(func.min(Patient.id)).scalar_subquery(),
                    start_at=later, end_at=later + dt.timedelta(minutes=5), kind="in_person",
                    status="booked", code=f"{n:06d}", created_via="ivr", created_at=start,
                    updated_at=start))

            await database.write(write)

        booked = await timed(len(slots), at_once, book)
        stored = await _count(database, Appointment.id)
        if stored != len(slots):
            raise RuntimeError(f"{len(slots)} booked, {stored} stored")
        floor = await timed(len(slots), at_once, bare_insert)
    finally:
        await database.close()
    return booked, floor


async def _count(database: Database, column: object) -> int:
    async with database.reading() as session:
        return int(await session.scalar(select(func.count(column))) or 0)


def rows(name: str, runs: list[tuple[Timed, Timed]]) -> list[str]:
    """A backend's two figures, the median run's, beside the floor's."""
    middle = sorted(runs, key=lambda run: run[0].per_second)[len(runs) // 2]
    booked, floor = middle
    return [f"{name + ': writes/s':<28} {booked.per_second:>10.0f} {floor.per_second:>10.0f} "
            f"{floor.per_second / booked.per_second:>7.2f}x",
            f"{name + ': CPU ms a write':<28} {booked.cpu_ms:>10.2f} {floor.cpu_ms:>10.2f} "
            f"{booked.cpu_ms / floor.cpu_ms:>7.2f}x"]


async def main(options: argparse.Namespace) -> list[str]:
    """Every run on both backends; the table's lines."""
    lines = [f"booking writes: {options.doctors * SLOTS} a run, {options.at_once} at once, "
             f"median of {options.runs} runs",
             f"{'':<28} {'booking':>10} {'floor':>10} {'ratio':>8}"]
    with tempfile.TemporaryDirectory() as tmp:
        lines += rows("sqlite", [await one_run(f"sqlite+aiosqlite:///{Path(tmp)}/w{n}.db",
                                               options.doctors, options.at_once)
                                 for n in range(options.runs)])
    server = await asyncio.to_thread(PostgresServer().start)
    try:
        lines += rows("postgresql", [await one_run(await server.create_database(),
                                                   options.doctors, options.at_once)
                                     for _ in range(options.runs)])
    finally:
        await asyncio.to_thread(server.stop)
    return lines


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doctors", type=int, default=5)
    parser.add_argument("--at-once", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    return parser.parse_args(argv)


if __name__ == "__main__":
    print("\n".join(asyncio.run(main(arguments()))))
