"""The booking service on SQLite and PostgreSQL: what callers get and what the store holds."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from clinic.clinic_file import read_clinic
from clinic.phones import InvalidPhone
from clinic.schedule import VisitKind
from db.booking import (
    Booked,
    BookingPolicy,
    BookingService,
    Cancelled,
    Refusal,
    Refused,
    SlotTaken,
)
from db.clinic_sync import load_clinic
from db.engine import Database
from db.models import Appointment, AppointmentEvent, Consultation, Patient
from db.schema import upgrade
from tests.support.clinics import Clock
from tests.test_schedule import at

DEMO = Path(__file__).resolve().parents[1] / "clinic.toml"
SATURDAY = dt.date(2026, 11, 28)
MONDAY = dt.date(2026, 11, 30)
WEDNESDAY = dt.date(2026, 12, 2)
PATIENT = "09121234567"
OTHER = "09351112233"


@pytest.fixture
def clock() -> Clock:
    return Clock(at(SATURDAY, "09:00"))


@pytest.fixture
async def service(database: Database, clock: Clock) -> BookingService:
    await load_clinic(database, read_clinic(DEMO), clock=clock)
    return BookingService(database, BookingPolicy(), clock)


async def doctor_id(service: BookingService, key: str) -> int:
    return next(d.id for d in await service.doctors() if d.key == key)


async def stored(database: Database) -> list[tuple[str, dt.datetime, str]]:
    async with database.reading() as session:
        rows = await session.execute(
            select(Appointment.code, Appointment.start_at, Appointment.status)
            .order_by(Appointment.id))
        return [tuple(r) for r in rows]


async def test_free_slots_follow_the_weekly_hours(service: BookingService) -> None:
    ahmadi = await doctor_id(service, "dr-ahmadi")
    slots = await service.free_slots(ahmadi, SATURDAY)
    assert [s.start for s in slots][:3] == [at(SATURDAY, "16:00"), at(SATURDAY, "16:20"),
                                            at(SATURDAY, "16:40")]
    assert len(slots) == 12
    assert await service.next_free_days(ahmadi) == [SATURDAY, MONDAY, WEDNESDAY]


async def test_slots_that_started_or_start_too_soon_are_not_offered(
        service: BookingService, clock: Clock) -> None:
    clock.now = at(SATURDAY, "17:05")
    slots = await service.free_slots(await doctor_id(service, "dr-ahmadi"), SATURDAY)
    assert slots[0].start == at(SATURDAY, "17:40")


async def test_booking_writes_one_appointment_with_a_code(
        service: BookingService, database: Database) -> None:
    ahmadi = await doctor_id(service, "dr-ahmadi")
    result = await service.book("+989121234567", ahmadi, at(SATURDAY, "16:20"),
                                VisitKind.IN_PERSON)
    assert isinstance(result, Booked)
    booking = result.appointment
    assert booking.code.isdigit() and len(booking.code) == 6
    assert booking.patient_phone == "+989121234567"
    assert booking.end == at(SATURDAY, "16:40")
    assert await stored(database) == [(booking.code, at(SATURDAY, "16:20"), "booked")]
    assert at(SATURDAY, "16:20") not in [s.start for s in await service.free_slots(ahmadi,
                                                                                   SATURDAY)]
    assert [a.code for a in await service.upcoming("0912 123 4567")] == [booking.code]
    assert (await service.find_by_code(PATIENT, booking.code)) == booking
    assert await service.find_by_code(OTHER, booking.code) is None


async def test_a_patients_rows_are_written_once_and_each_booking_has_its_event(
        service: BookingService, database: Database) -> None:
    """A first booking adds the patient in their language; a second one, on another line in
    another language, finds the same row and keeps it as it was; each booking's event says
    how it was made."""
    ahmadi = await doctor_id(service, "dr-ahmadi")
    first = await service.book(PATIENT, ahmadi, at(SATURDAY, "16:00"), VisitKind.IN_PERSON,
                               language="en")
    second = await service.book(PATIENT, ahmadi, at(WEDNESDAY, "10:15"), VisitKind.PHONE,
                                via="staff", language="fa")
    assert isinstance(first, Booked) and isinstance(second, Booked)
    async with database.reading() as session:
        patients = (await session.execute(select(Patient.phone, Patient.language))).all()
        owners = (await session.scalars(select(Appointment.patient_id).distinct())).all()
        events = (await session.execute(
            select(AppointmentEvent.appointment_id, AppointmentEvent.action,
                   AppointmentEvent.via, AppointmentEvent.new_start, AppointmentEvent.at)
            .order_by(AppointmentEvent.id))).all()
    assert patients == [("+989121234567", "en")] and len(owners) == 1
    assert [tuple(e[:4]) for e in events] == [
        (first.appointment.id, "booked", "ivr", at(SATURDAY, "16:00")),
        (second.appointment.id, "booked", "staff", at(WEDNESDAY, "10:15"))]
    assert all(event.at is not None for event in events)


async def test_a_booking_for_a_number_another_line_is_adding_waits_and_shares_its_row(
        service: BookingService, database: Database) -> None:
    """Another line's transaction adds the same new patient first and commits while this
    booking waits on it: the booking stands, on that one patient row."""
    ahmadi = await doctor_id(service, "dr-ahmadi")
    async with database.writing() as other:
        await other.execute(insert(Patient).values(phone="+989351112233", language="en",
                                                   created_at=at(SATURDAY, "09:00")))
        booking = asyncio.ensure_future(
            service.book(OTHER, ahmadi, at(SATURDAY, "16:00"), VisitKind.IN_PERSON))
        await asyncio.sleep(0.5)  # it waits for this transaction's lock
        assert not booking.done()
    assert isinstance(await booking, Booked)
    async with database.reading() as session:
        assert (await session.execute(select(Patient.phone, Patient.language))).all() == [
            ("+989351112233", "en")]


async def test_a_taken_slot_answers_with_the_nearest_free_ones(
        service: BookingService, database: Database) -> None:
    ahmadi = await doctor_id(service, "dr-ahmadi")
    await service.book(PATIENT, ahmadi, at(SATURDAY, "16:20"), VisitKind.IN_PERSON)
    result = await service.book(OTHER, ahmadi, at(SATURDAY, "16:20"), VisitKind.IN_PERSON)
    assert isinstance(result, SlotTaken)
    assert [s.start for s in result.alternatives] == [
        at(SATURDAY, "16:00"), at(SATURDAY, "16:40"), at(SATURDAY, "17:00")]
    assert len(await stored(database)) == 1


@pytest.mark.parametrize(("key", "day", "clock_time", "kind", "reason"), [
    ("dr-ahmadi", SATURDAY, "16:10", VisitKind.IN_PERSON, Refusal.NOT_A_SLOT),
    ("dr-ahmadi", SATURDAY, "16:00", VisitKind.PHONE, Refusal.KIND_NOT_OFFERED),
    ("dr-ahmadi", SATURDAY, "09:20", VisitKind.IN_PERSON, Refusal.TOO_SOON),
    ("dr-ahmadi", SATURDAY + dt.timedelta(days=28), "16:00", VisitKind.IN_PERSON,
     Refusal.TOO_FAR),
])
async def test_bookings_that_break_a_rule_are_refused_and_nothing_is_written(
        service: BookingService, database: Database, key: str, day: dt.date, clock_time: str,
        kind: VisitKind, reason: Refusal) -> None:
    result = await service.book(PATIENT, await doctor_id(service, key), at(day, clock_time), kind)
    assert result == Refused(reason)
    assert await stored(database) == []


async def test_a_closure_removes_the_doctors_days(service: BookingService, clock: Clock) -> None:
    clock.now = at(dt.date(2027, 1, 9), "09:00")
    karimi = await doctor_id(service, "dr-karimi")
    assert await service.free_slots(karimi, dt.date(2027, 1, 9)) != []
    assert await service.free_slots(karimi, dt.date(2027, 1, 10)) == []
    assert (await service.book(PATIENT, karimi, at(dt.date(2027, 1, 10), "15:00"),
                               VisitKind.IN_PERSON) == Refused(Refusal.NOT_A_SLOT))
    assert dt.date(2027, 1, 10) not in await service.next_free_days(karimi, limit=5)


async def test_unknown_doctor_and_bad_number_are_refused(service: BookingService) -> None:
    assert (await service.book(PATIENT, 999, at(SATURDAY, "16:00"), VisitKind.IN_PERSON)
            == Refused(Refusal.UNKNOWN_DOCTOR))
    with pytest.raises(InvalidPhone):
        await service.book("12345", 1, at(SATURDAY, "16:00"), VisitKind.IN_PERSON)


async def test_a_phone_visit_gets_a_scheduled_consultation(
        service: BookingService, database: Database) -> None:
    ahmadi = await doctor_id(service, "dr-ahmadi")
    result = await service.book(PATIENT, ahmadi, at(WEDNESDAY, "10:15"), VisitKind.PHONE)
    assert isinstance(result, Booked)
    async with database.reading() as session:
        consultation = await session.scalar(select(Consultation))
    assert consultation is not None
    assert (consultation.state, consultation.due_at) == ("scheduled", at(WEDNESDAY, "10:15"))


async def test_rescheduling_moves_the_booking_and_frees_the_old_slot(
        service: BookingService, database: Database) -> None:
    ahmadi = await doctor_id(service, "dr-ahmadi")
    booked = await service.book(PATIENT, ahmadi, at(SATURDAY, "16:00"), VisitKind.IN_PERSON)
    assert isinstance(booked, Booked)
    moved = await service.reschedule(booked.appointment.id, PATIENT, at(MONDAY, "17:00"))
    assert isinstance(moved, Booked)
    assert moved.appointment.code == booked.appointment.code
    assert await stored(database) == [(booked.appointment.code, at(MONDAY, "17:00"), "booked")]
    assert at(SATURDAY, "16:00") in [s.start for s in await service.free_slots(ahmadi, SATURDAY)]
    async with database.reading() as session:
        actions = (await session.scalars(select(AppointmentEvent.action)
                                         .order_by(AppointmentEvent.id))).all()
    assert actions == ["booked", "rescheduled"]


async def test_rescheduling_onto_a_taken_slot_keeps_the_old_booking(
        service: BookingService, database: Database) -> None:
    ahmadi = await doctor_id(service, "dr-ahmadi")
    mine = await service.book(PATIENT, ahmadi, at(SATURDAY, "16:00"), VisitKind.IN_PERSON)
    await service.book(OTHER, ahmadi, at(MONDAY, "17:00"), VisitKind.IN_PERSON)
    assert isinstance(mine, Booked)
    result = await service.reschedule(mine.appointment.id, PATIENT, at(MONDAY, "17:00"))
    assert isinstance(result, SlotTaken)
    assert (await stored(database))[0][1:] == (at(SATURDAY, "16:00"), "booked")


async def test_only_the_owner_may_change_a_booking_and_not_too_late(
        service: BookingService, database: Database, clock: Clock) -> None:
    ahmadi = await doctor_id(service, "dr-ahmadi")
    mine = await service.book(PATIENT, ahmadi, at(SATURDAY, "16:00"), VisitKind.IN_PERSON)
    assert isinstance(mine, Booked)
    ident = mine.appointment.id
    assert (await service.cancel(ident, OTHER)).reason is Refusal.NOT_FOUND  # type: ignore[union-attr]
    assert isinstance(await service.reschedule(ident, OTHER, at(MONDAY, "17:00")), Refused)
    clock.now = at(SATURDAY, "14:30")
    late = await service.cancel(ident, PATIENT)
    assert late == Refused(Refusal.PAST_CUTOFF, "changes close 2 hours before the appointment")
    assert (await stored(database))[0][2] == "booked"


async def test_the_office_cancels_inside_the_cut_off_but_not_a_consultation_under_way(
        service: BookingService, clock: Clock, database: Database) -> None:
    ahmadi = await doctor_id(service, "dr-ahmadi")
    first = await service.book(PATIENT, ahmadi, at(WEDNESDAY, "10:00"), VisitKind.PHONE)
    second = await service.book(OTHER, ahmadi, at(WEDNESDAY, "10:30"), VisitKind.PHONE)
    assert isinstance(first, Booked) and isinstance(second, Booked)
    clock.now = at(WEDNESDAY, "09:00")  # inside the 2-hour cut-off: callers can no longer
    assert isinstance(await service.cancel(first.appointment.id, PATIENT), Refused)
    assert isinstance(await service.cancel(first.appointment.id, PATIENT, via="staff"),
                      Cancelled)
    async with database.writing() as session:
        consultation = await session.scalar(select(Consultation).where(
            Consultation.appointment_id == second.appointment.id))
        assert consultation is not None
        consultation.state = "bridged"
    assert await service.cancel(second.appointment.id, OTHER, via="staff") == Refused(
        Refusal.PAST_CUTOFF, "the consultation call is under way")
    assert [row[2] for row in await stored(database)] == ["cancelled", "booked"]


async def test_cancelling_frees_the_slot_and_the_consultation(
        service: BookingService, database: Database) -> None:
    ahmadi = await doctor_id(service, "dr-ahmadi")
    mine = await service.book(PATIENT, ahmadi, at(WEDNESDAY, "10:00"), VisitKind.PHONE)
    assert isinstance(mine, Booked)
    assert isinstance(await service.cancel(mine.appointment.id, PATIENT), Cancelled)
    assert await service.upcoming(PATIENT) == []
    again = await service.book(OTHER, ahmadi, at(WEDNESDAY, "10:00"), VisitKind.IN_PERSON)
    assert isinstance(again, Booked)
    async with database.reading() as session:
        assert await session.scalar(select(Consultation.state)) == "cancelled"
        assert await session.scalar(select(func.count()).select_from(Appointment)) == 2


async def test_the_database_itself_refuses_a_second_booking_of_a_slot(
        service: BookingService, database: Database) -> None:
    ahmadi = await doctor_id(service, "dr-ahmadi")
    first = await service.book(PATIENT, ahmadi, at(SATURDAY, "16:00"), VisitKind.IN_PERSON)
    assert isinstance(first, Booked)
    with pytest.raises(IntegrityError):
        async with database.writing() as session:
            row = await session.get(Appointment, first.appointment.id)
            assert row is not None
            session.add(Appointment(
                doctor_id=ahmadi, patient_id=row.patient_id, start_at=row.start_at,
                end_at=row.end_at, kind="in_person", status="booked", code="999999",
                created_via="staff", created_at=row.created_at, updated_at=row.created_at))


async def test_a_briefly_locked_sqlite_file_delays_a_booking_but_loses_nothing(
        tmp_path: Path, clock: Clock) -> None:
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'locked.db'}")
    await upgrade(database)
    try:
        await load_clinic(database, read_clinic(DEMO), clock=clock)
        service = BookingService(database, BookingPolicy(), clock)
        ahmadi = await doctor_id(service, "dr-ahmadi")
        other_process = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
        other_process.execute("BEGIN EXCLUSIVE")
        booking = asyncio.create_task(
            service.book(PATIENT, ahmadi, at(SATURDAY, "16:00"), VisitKind.IN_PERSON))
        await asyncio.sleep(1.0)
        assert not booking.done()
        other_process.execute("COMMIT")
        other_process.close()
        result = await asyncio.wait_for(booking, 30)
        assert isinstance(result, Booked)
        assert await stored(database) == [(result.appointment.code, at(SATURDAY, "16:00"),
                                           "booked")]
    finally:
        await database.close()


async def test_a_consultation_under_way_cannot_be_moved_or_cancelled(
        service: BookingService, database: Database) -> None:
    service.policy = BookingPolicy(change_cutoff=dt.timedelta(0))
    ahmadi = await doctor_id(service, "dr-ahmadi")
    booked = await service.book(PATIENT, ahmadi, at(WEDNESDAY, "10:00"), VisitKind.PHONE)
    assert isinstance(booked, Booked)
    async with database.writing() as session:
        consultation = await session.scalar(select(Consultation))
        assert consultation is not None
        consultation.state = "dialling"
    refused = Refused(Refusal.PAST_CUTOFF, "the consultation call is under way")
    assert await service.cancel(booked.appointment.id, PATIENT) == refused
    assert await service.reschedule(booked.appointment.id, PATIENT, at(WEDNESDAY, "11:00")) \
        == refused
    assert (await stored(database))[0][1:] == (at(WEDNESDAY, "10:00"), "booked")
