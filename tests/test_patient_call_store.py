"""The patient call store's rules, on both backends: what is planned, what is claimed, and
what is dropped unrung when its reason is gone."""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import select

from clinic.calendar import Weekday
from clinic.call_kinds import CallKind, Leg
from clinic.call_times import CallHours, CallTries, ReminderTimes
from clinic.schedule import TEHRAN, VisitKind
from db.booking import Booked, BookingService
from db.clinic_sync import lift_absence, load_clinic, record_absence
from db.consultations import ConsultationStore
from db.engine import Database
from db.models import Closure
from db.patient_calls import CallPlanning, PatientCallStore, Plan, Purpose
from tests.support.clinics import Clock, every_day_clinic
from tests.support.patient_calls import calls
from tests.test_schedule import at

SATURDAY = dt.date(2026, 11, 28)
THURSDAY = SATURDAY - dt.timedelta(days=2)
HOURS = CallHours(21 * 60, 8 * 60, frozenset({Weekday.FRIDAY}), TEHRAN)
PLANNING = CallPlanning(HOURS, ReminderTimes(1, 18 * 60, HOURS, dt.timedelta(hours=2)),
                        reminders=True, absences=True, survey="off",
                        survey_after=dt.timedelta(minutes=5),
                        tries=CallTries(30, 3, dt.timedelta(minutes=30)))
LEASE = dt.timedelta(minutes=1)


async def clinic_with_a_booking(database: Database, clock: Clock,
                                kind: VisitKind = VisitKind.IN_PERSON) -> int:
    await load_clinic(database, every_day_clinic(8, slot_minutes=30, start_minute=10 * 60),
                      clock=clock)
    service = BookingService(database, clock=clock)
    [doctor] = await service.doctors()
    booked = await service.book("+989351110001", doctor.id, at(SATURDAY, "10:00"), kind)
    assert isinstance(booked, Booked)
    return booked.appointment.id


async def test_a_lifted_absence_is_never_called_about(database: Database) -> None:
    clock = Clock(at(THURSDAY, "12:00"))
    await clinic_with_a_booking(database, clock)
    store = PatientCallStore(database, clock)
    await record_absence(database, "dr-1", SATURDAY, SATURDAY, "sick")
    assert await store.plan(PLANNING) == Plan({Purpose.ABSENCE: 1})
    [closure] = await _closures(database)
    assert await lift_absence(database, closure)
    assert await store.claim_next("nobat-1", LEASE, 10, planning=PLANNING) == []
    [call] = await calls(database)
    assert (call.state, call.cause, call.attempts) == (
        "cancelled", "the absence was lifted", 0)
    assert not await lift_absence(database, closure)  # lifting twice changes nothing


async def test_two_instances_planning_at_once_plan_each_call_once(database: Database) -> None:
    clock = Clock(at(THURSDAY, "18:00"))
    await clinic_with_a_booking(database, clock)
    stores = [PatientCallStore(database, clock) for _ in range(4)]
    await asyncio.gather(*(store.plan(PLANNING) for store in stores))
    assert [(c.purpose, c.due_at) for c in await calls(database)] == [
        ("reminder", at(THURSDAY, "18:00"))]
    claims = await asyncio.gather(*(store.claim_next(f"nobat-{n}", LEASE, 5, planning=PLANNING)
                                    for n, store in enumerate(stores)))
    assert sum(len(found) for found in claims) == 1


async def test_the_in_call_survey_is_written_once_for_the_consultations_patient_leg(
        database: Database) -> None:
    clock = Clock(at(SATURDAY, "10:00"))
    appointment = await clinic_with_a_booking(database, Clock(at(THURSDAY, "12:00")),
                                              VisitKind.PHONE)
    consultations = ConsultationStore(database, clock)
    [claim] = await consultations.claim_next("nobat-1", LEASE, 1)
    await consultations.bridged(claim, clock())
    store = PatientCallStore(database, clock)
    leg = CallKind.CONSULTATION.channel_id(claim.ident, claim.attempt, Leg.PATIENT)
    survey = await store.live(leg)
    assert survey is not None and survey.appointment_id == appointment
    assert (survey.purpose, survey.state) == (Purpose.SURVEY, "done")
    assert await store.live(leg) is None  # a second AGI request on that leg: nothing
    consultation = CallKind.CONSULTATION
    assert await store.live(consultation.channel_id(claim.ident, claim.attempt, Leg.DOCTOR)) is None
    assert await store.live(consultation.channel_id(claim.ident, 9, Leg.PATIENT)) is None


async def _closures(database: Database) -> list[int]:
    async with database.reading() as session:
        return list((await session.scalars(select(Closure.id))).all())
