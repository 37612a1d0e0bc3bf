"""bench.booking_writes runs, small: one doctor's day booked, then as many bare inserts."""

from __future__ import annotations

from sqlalchemy import func, select

from bench.booking_writes import SLOTS, one_run, rows
from db.engine import Database
from db.models import Appointment, AppointmentEvent, Patient


async def test_every_slot_is_booked_with_its_rows_and_the_floor_writes_as_many(
        database_url: str) -> None:
    booked, floor = await one_run(database_url, doctors=1, at_once=10)
    assert booked.writes == floor.writes == SLOTS
    database = Database.from_url(database_url)
    try:
        async with database.reading() as session:
            counts = [await session.scalar(select(func.count()).select_from(model))
                      for model in (Appointment, AppointmentEvent, Patient)]
    finally:
        await database.close()
    # Each booking: its appointment, event and new patient; each bare insert: one appointment.
    assert counts == [2 * SLOTS, SLOTS, SLOTS]
    [speed, cpu] = rows("x", [(booked, floor)])
    assert speed.startswith("x: writes/s") and cpu.startswith("x: CPU ms a write")
