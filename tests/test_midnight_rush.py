"""The midnight rush: 200 callers in 4 processes race for 20 slots; the database decides."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import func, select

from db.booking import BookingService
from db.clinic_sync import load_clinic
from db.engine import Database
from db.models import Appointment
from tests.support.clinics import every_day_clinic, tomorrow_tehran
from tests.support.rush import rush

CALLERS, SLOTS, PROCESSES = 200, 20, 4


async def test_two_hundred_callers_get_exactly_twenty_bookings(
        database: Database, database_url: str) -> None:
    await load_clinic(database, every_day_clinic(SLOTS))
    service = BookingService(database)
    doctor = (await service.doctors())[0].id
    slots = await service.free_slots(doctor, tomorrow_tehran())
    assert len(slots) == SLOTS
    calls = [(f"0912{n:07d}", slots[n % SLOTS].start) for n in range(CALLERS)]

    attempts = (await rush(database_url, doctor, calls, PROCESSES)).attempts

    assert Counter(a.outcome for a in attempts) == {"booked": SLOTS, "taken": CALLERS - SLOTS}
    async with database.reading() as session:
        booked = (await session.execute(
            select(Appointment.start_at, func.count()).where(Appointment.status == "booked")
            .group_by(Appointment.start_at))).all()
    assert sorted(start for start, _ in booked) == [s.start for s in slots]
    assert all(count == 1 for _, count in booked)
    assert await service.free_slots(doctor, tomorrow_tehran()) == []
