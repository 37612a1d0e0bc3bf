"""Loading the clinic file: idempotent, updates in place, refuses to orphan a booking."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import func, select

from clinic.calendar import Weekday
from clinic.clinic_file import ClinicSpec, ClosureSpec, read_clinic
from clinic.schedule import HoursRule, VisitKind
from db.booking import Booked, BookingService
from db.clinic_sync import LoadRefused, load_clinic
from db.engine import Database
from db.models import Clinic, Closure, Doctor, WeeklyHours
from nobat.cli import main
from tests.support.clinics import Clock
from tests.test_booking import SATURDAY
from tests.test_schedule import at

DEMO = Path(__file__).resolve().parents[1] / "clinic.toml"


@pytest.fixture
def clock() -> Clock:
    return Clock(at(SATURDAY, "09:00"))


async def counts(database: Database) -> dict[str, int]:
    async with database.reading() as session:
        return {model.__tablename__: await session.scalar(select(func.count()).select_from(model))
                for model in (Clinic, Doctor, WeeklyHours, Closure)}


def with_doctor(spec: ClinicSpec, key: str, **changes: object) -> ClinicSpec:
    doctors = tuple(dataclasses.replace(d, **changes) if d.key == key else d
                    for d in spec.doctors)
    return dataclasses.replace(spec, doctors=doctors)


async def book_saturday_16(database: Database, clock: Clock) -> Booked:
    service = BookingService(database, clock=clock)
    ahmadi = next(d.id for d in await service.doctors() if d.key == "dr-ahmadi")
    result = await service.book("09121234567", ahmadi, at(SATURDAY, "16:00"),
                                VisitKind.IN_PERSON)
    assert isinstance(result, Booked)
    return result


async def test_loading_twice_changes_nothing(database: Database, clock: Clock) -> None:
    spec = read_clinic(DEMO)
    first = await load_clinic(database, spec, clock)
    assert "doctor dr-ahmadi added" in first.changes
    before = await counts(database)
    assert before == {"clinic": 1, "doctor": 5, "weekly_hours": 23, "closure": 2}
    assert (await load_clinic(database, spec, clock)).changes == []
    assert await counts(database) == before
    assert await revision(database) == 1


async def revision(database: Database) -> int:
    async with database.reading() as session:
        return await session.scalar(select(Clinic.revision))


async def test_a_changed_file_updates_in_place(database: Database, clock: Clock) -> None:
    spec = read_clinic(DEMO)
    await load_clinic(database, spec, clock)
    async with database.reading() as session:
        ahmadi_id = await session.scalar(select(Doctor.id).where(Doctor.key == "dr-ahmadi"))
    changed = with_doctor(spec, "dr-ahmadi", name_en="Dr. M. Ahmadi", hours=(
        HoursRule(Weekday.SUNDAY, 9 * 60, 12 * 60, 20, frozenset({VisitKind.IN_PERSON})),))
    report = await load_clinic(database, changed, clock)
    assert report.changes == ["doctor dr-ahmadi: name_en changed",
                              "doctor dr-ahmadi: weekly hours changed"]
    assert await revision(database) == 2
    async with database.reading() as session:
        doctor = await session.scalar(select(Doctor).where(Doctor.key == "dr-ahmadi"))
        hours = (await session.scalars(select(WeeklyHours.weekday)
                                       .where(WeeklyHours.doctor_id == ahmadi_id))).all()
    assert doctor is not None and (doctor.id, doctor.name_en) == (ahmadi_id, "Dr. M. Ahmadi")
    assert hours == [Weekday.SUNDAY]


async def test_a_removed_doctor_without_bookings_is_kept_inactive(
        database: Database, clock: Clock) -> None:
    spec = read_clinic(DEMO)
    await load_clinic(database, spec, clock)
    smaller = dataclasses.replace(spec, doctors=spec.doctors[:-1])
    report = await load_clinic(database, smaller, clock)
    assert report.changes == ["doctor dr-moradi removed (kept as inactive for history)"]
    assert "dr-moradi" not in [d.key for d in await BookingService(database).doctors()]


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda s: dataclasses.replace(s, doctors=s.doctors[1:]), "the doctor is no longer listed"),
    (lambda s: with_doctor(s, "dr-ahmadi", hours=()), "no longer inside the doctor's weekly hours"),
    (lambda s: with_doctor(s, "dr-ahmadi", hours=tuple(
        dataclasses.replace(h, slot_minutes=30) for h in s.doctors[0].hours)),
     "no longer inside the doctor's weekly hours"),
    (lambda s: with_doctor(s, "dr-ahmadi", hours=tuple(
        dataclasses.replace(h, kinds=frozenset({VisitKind.PHONE})) for h in s.doctors[0].hours)),
     "the hours no longer offer in person visits"),
])
async def test_a_change_that_hits_a_booking_is_refused_and_changes_nothing(
        database: Database, clock: Clock, edit: object, reason: str) -> None:
    spec = read_clinic(DEMO)
    await load_clinic(database, spec, clock)
    booked = await book_saturday_16(database, clock)
    before = await counts(database)
    with pytest.raises(LoadRefused) as refused:
        await load_clinic(database, edit(spec), clock)  # type: ignore[operator]
    assert str(refused.value) == (
        "refused: 1 booked appointment(s) would be affected; cancel or move them first, or "
        f"undo the change:\n  booking {booked.appointment.code} with dr-ahmadi at "
        f"{SATURDAY} 16:00 (*******4567): {reason}")
    assert await counts(database) == before
    assert (await load_clinic(database, spec, clock)).changes == []


async def test_an_absence_over_a_booking_is_accepted_and_the_booking_kept(
        database: Database, clock: Clock) -> None:
    spec = read_clinic(DEMO)
    await load_clinic(database, spec, clock)
    booked = await book_saturday_16(database, clock)
    absent = dataclasses.replace(spec, closures=(
        *spec.closures, ClosureSpec("dr-ahmadi", SATURDAY, SATURDAY, "conference")))
    report = await load_clinic(database, absent, clock)
    assert report.changes == [
        "closures: 3 listed (were 2)",
        "1 booked appointment(s) fall on a closure: their patients will be called to move "
        "or cancel"]
    [kept] = await BookingService(database, clock=clock).upcoming(booked.appointment.patient_phone)
    assert (kept.id, kept.status) == (booked.appointment.id, "booked")


def test_clinic_load_command_reports_changes_then_none(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/c.db"\n')
    assert main(["-c", str(config), "clinic", "load", str(DEMO)]) == 0
    assert "doctor dr-karimi added" in capsys.readouterr().out
    assert main(["-c", str(config), "clinic", "load", str(DEMO)]) == 0
    assert capsys.readouterr().out.strip() == f"{DEMO}: unchanged since its last load"
    assert main(["-c", str(config), "clinic", "load", "--compare", str(DEMO)]) == 0
    assert capsys.readouterr().out.strip() == f"{DEMO}: no changes"
    broken = tmp_path / "broken.toml"
    broken.write_text("[clinic\n")
    assert main(["-c", str(config), "clinic", "load", str(broken)]) == 2
    assert f"{broken}:1: invalid TOML" in capsys.readouterr().err


def test_closures_accept_iso_dates(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[clinic]\nphone = "02188776655"\n[[closures]]\nfrom = 2026-12-11\n')
    assert read_clinic(path).closures == (ClosureSpec(None, dt.date(2026, 12, 11),
                                                      dt.date(2026, 12, 11), ""),)
