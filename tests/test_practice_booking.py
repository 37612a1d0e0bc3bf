"""Two practices in one store: each practice's booking service sees and changes only its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from clinic.clinic_file import read_clinic
from clinic.schedule import VisitKind
from db.booking import Booked, BookingPolicy, BookingService, Refusal, Refused
from db.clinic_sync import load_clinic
from db.engine import Database
from tests.support.clinics import DEMO_FILE, Clock, second_practice
from tests.test_booking import PATIENT, SATURDAY, clock  # noqa: F401  (fixture)

SHIRAZ = "shiraz-eye"


@pytest.fixture
async def practices(database: Database, clock: Clock, tmp_path: Path  # noqa: F811
                    ) -> tuple[BookingService, BookingService]:
    other = tmp_path / "shiraz.toml"
    other.write_text(second_practice(SHIRAZ), encoding="utf-8")
    await load_clinic(database, read_clinic(DEMO_FILE), clock=clock)
    await load_clinic(database, read_clinic(other), clock=clock)
    return (BookingService(database, BookingPolicy(), clock, "nobat-demo"),
            BookingService(database, BookingPolicy(), clock, SHIRAZ))


async def first_slot(service: BookingService, key: str) -> tuple[int, Booked]:
    doctor = next(d for d in await service.doctors() if d.key == key)
    day = (await service.next_free_days(doctor.id))[0]
    slot = (await service.free_slots(doctor.id, day))[0]
    booked = await service.book(PATIENT, doctor.id, slot.start, VisitKind.IN_PERSON)
    assert isinstance(booked, Booked)
    return doctor.id, booked


async def test_each_practice_lists_its_own_doctors_and_words(
        practices: tuple[BookingService, BookingService]) -> None:
    tehran, shiraz = practices
    ours, theirs = await tehran.doctors(), await shiraz.doctors()
    assert [d.key for d in ours] == [d.key for d in theirs]
    assert not {d.id for d in ours} & {d.id for d in theirs}
    assert (await tehran.clinic_profile()).name_en == "Nobat Clinic"  # type: ignore[union-attr]
    assert (await shiraz.clinic_profile()).name_en == "Shiraz Eye Practice"  # type: ignore[union-attr]


async def test_the_same_patient_booking_at_two_practices_sees_each_at_its_own(
        practices: tuple[BookingService, BookingService]) -> None:
    tehran, shiraz = practices
    _, at_tehran = await first_slot(tehran, "dr-ahmadi")
    _, at_shiraz = await first_slot(shiraz, "dr-ahmadi")
    assert [a.code for a in await tehran.upcoming(PATIENT)] == [at_tehran.appointment.code]
    assert [a.code for a in await shiraz.upcoming(PATIENT)] == [at_shiraz.appointment.code]
    assert await tehran.find_by_code(PATIENT, at_shiraz.appointment.code) is None
    assert await tehran.appointment(at_shiraz.appointment.id) is None


async def test_a_practice_cannot_move_cancel_or_book_with_another_practices_doctor(
        practices: tuple[BookingService, BookingService]) -> None:
    tehran, shiraz = practices
    doctor, at_shiraz = await first_slot(shiraz, "dr-karimi")
    appointment = at_shiraz.appointment
    cancelled = await tehran.cancel(appointment.id, PATIENT)
    assert isinstance(cancelled, Refused) and cancelled.reason is Refusal.NOT_FOUND
    moved = await tehran.reschedule(appointment.id, PATIENT, appointment.start)
    assert isinstance(moved, Refused) and moved.reason is Refusal.NOT_FOUND
    later = appointment.end
    booked = await tehran.book(PATIENT, doctor, later, VisitKind.IN_PERSON)
    assert isinstance(booked, Refused) and booked.reason is Refusal.UNKNOWN_DOCTOR
    assert [a.code for a in await shiraz.upcoming(PATIENT)] == [appointment.code]
