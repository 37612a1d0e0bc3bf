"""Phone consultations in the store for tests and benchmarks: booked with the call due at
a chosen moment, and read back as tests check them."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from clinic.schedule import VisitKind
from db.booking import Booked, BookingService
from db.engine import Database
from db.models import Appointment, CallAttempt, Consultation


async def first_phone_slot(service: BookingService, doctor_key: str) -> tuple[int, dt.datetime]:
    """A doctor's id and the start of their first free phone-visit slot."""
    doctor = next(d for d in await service.doctors() if d.key == doctor_key)
    for day in await service.next_free_days(doctor.id, limit=14):
        for slot in await service.free_slots(doctor.id, day):
            if VisitKind.PHONE in slot.kinds:
                return doctor.id, slot.start
    raise AssertionError(f"{doctor_key} has no free phone-visit slot in two weeks")


async def book_due(service: BookingService, database: Database, doctor_id: int, patient: str,
                   start: dt.datetime, due: dt.datetime, ends_at: dt.datetime | None = None
                   ) -> tuple[int, int]:
    """Book a phone visit at `start` and make its call due at `due` (the store is the
    truth); with `ends_at`, the visit itself is moved to run from `due` to then (a real-time
    test's short consultation). Returns the appointment's and the consultation's ids."""
    booked = await service.book(patient, doctor_id, start, VisitKind.PHONE, via="staff")
    assert isinstance(booked, Booked)
    async with database.writing() as session:
        row = await session.scalar(select(Consultation).where(
            Consultation.appointment_id == booked.appointment.id))
        assert row is not None
        row.due_at = due
        if ends_at is not None:
            appointment = await session.get(Appointment, booked.appointment.id)
            assert appointment is not None
            appointment.start_at, appointment.end_at = due, ends_at
        return booked.appointment.id, row.id


async def consultation(database: Database, ident: int) -> Consultation:
    """The consultation row as the store holds it now."""
    async with database.reading() as session:
        found = await session.get(Consultation, ident)
    assert found is not None
    return found


async def attempts(database: Database, ident: int) -> list[CallAttempt]:
    """A consultation's call attempts, first to last."""
    async with database.reading() as session:
        return list((await session.scalars(select(CallAttempt).where(
            CallAttempt.consultation_id == ident).order_by(CallAttempt.number))).all())
