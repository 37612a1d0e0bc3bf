"""Apply the staff's clinic file to the database: idempotent, in place, never losing a booking.

A change that would leave a booking outside its doctor's hours is refused. A closure over
booked appointments (a doctor's absence, a holiday) is accepted: the bookings stay, and
nobat rings each patient to move or cancel (db/patient_calls.py, flows/absence.toml).
One store may hold many practices (platform mode): a load touches its own practice's rows
only, and is refused if a number or a doctor's code in it belongs to another practice.
Each practice keeps the digest of the file it was last loaded from, so loading a folder
again skips the files that did not change.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import func, insert, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

import clinic as clinic_package
from clinic import phones
from clinic.clinic_file import ClinicSpec, DoctorSpec
from clinic.office import office_hours_text
from clinic.schedule import HoursRule, VisitKind, day_bounds, day_slots
from clinic.staff_toml import KeyPath, dotted
from db import records
from db.engine import Clock, Database, utc_now
from db.lifecycles import AppointmentStatus
from db.models import Appointment, Clinic, ClinicNumber, Closure, Doctor, Patient, WeeklyHours
from db.records import columns_of, record_of
from db.schema import head_revision

CLOSURE_CONFLICT = "falls on a closure"


@dataclass(frozen=True)
class AffectedBooking:
    """A booked appointment that a refused change would have orphaned."""

    code: str
    doctor_key: str
    start: dt.datetime
    patient: str
    reason: str
    closed: bool = False
    """Only a closure covers it: accepted, and the patient is called (an absence call)."""

    def describe(self, tz: ZoneInfo) -> str:
        """One line a secretary can act on; the patient's number stays masked."""
        local = self.start.astimezone(tz).strftime("%Y-%m-%d %H:%M")
        return (f"booking {self.code} with {self.doctor_key} at {local} "
                f"({phones.mask(self.patient)}): {self.reason}")


class LoadRefused(Exception):
    """The file does not fit what the store holds; nothing changed, and the message says why."""


class BookingsAffected(LoadRefused):
    """The file would leave booked appointments without a doctor or a slot."""

    def __init__(self, affected: list[AffectedBooking], tz: ZoneInfo) -> None:
        self.affected = affected
        lines = [f"refused: {len(affected)} booked appointment(s) would be affected; "
                 "cancel or move them first, or undo the change:"]
        lines += [f"  {a.describe(tz)}" for a in affected]
        super().__init__("\n".join(lines))


class HeldElsewhere(LoadRefused):
    """A number or a doctor's code in the file belongs to another practice of the store."""

    def __init__(self, held: list[tuple[KeyPath, str]],
                 where: Callable[[KeyPath], str] | None = None) -> None:
        self.held = held
        lines = ["refused: another practice holds what this file gives its own; take it out "
                 "of one of the two files:"]
        lines += [f"  {where(path)}: {dotted(path)}: {text}" if where else f"  {text}"
                  for path, text in held]
        super().__init__("\n".join(lines))

    def located(self, where: Callable[[KeyPath], str]) -> HeldElsewhere:
        """The same refusal, each held thing named by its file and line (`where`)."""
        return HeldElsewhere(self.held, where)


@dataclass
class LoadReport:
    """What a load changed, in words for the person who ran it."""

    changes: list[str] = field(default_factory=list)


def loaded_digest(source: bytes) -> str:
    """What a practice loaded from a file of these bytes keeps: their digest under this
    nobat's reading of clinic files and writing of rows."""
    return hashlib.sha256(_rows_form().encode() + b"\0" + source).hexdigest()


READING_LIBRARIES = ("phonenumbers", "jdatetime")
"""What reading a clinic file leans on beside the standard library: a newer one may read a
number or a date otherwise."""


@functools.cache
def _rows_form() -> str:
    """The schema, the source of the code that reads a clinic file (the clinic package) and
    turns it into rows, and the Python and libraries that code leans on (numbers, dates, the
    TOML parser), so that a nobat which reads or writes them otherwise compares every file
    with its rows once more."""
    modules = sorted(Path(clinic_package.__file__).parent.glob("*.py"))
    source = b"".join(Path(module).read_bytes() for module in (
        *modules, __file__, records.__file__))
    versions = " ".join((sys.version, *(version(name) for name in READING_LIBRARIES)))
    return f"{head_revision()} {versions} {hashlib.sha256(source).hexdigest()}"


async def loaded_digests(database: Database) -> dict[str, str]:
    """Each practice's key and the digest of the file it was last loaded from."""
    async with database.reading() as session:
        rows = await session.execute(select(Clinic.key, Clinic.loaded_digest)
                                     .where(Clinic.loaded_digest.is_not(None)))
        return {key: digest for key, digest in rows}


async def load_clinic(database: Database, spec: ClinicSpec, clock: Clock = utc_now,
                      digest: str | None = None) -> LoadReport:
    """Bring the database in line with the file in one transaction, or refuse and change
    nothing; `digest`, the `loaded_digest` of the bytes `spec` was read from, is kept."""
    report = LoadReport()

    async def run() -> LoadReport:
        report.changes.clear()
        async with database.writing() as session:
            held = await _held_elsewhere(session, spec)
            if held:
                raise HeldElsewhere(held)
            # Locked, so two loads of one practice at once (two nobat starting) take turns,
            # the later comparing the file with what the first wrote rather than both
            # replacing its hours.
            clinic = await session.scalar(
                select(Clinic).where(Clinic.key == spec.key).with_for_update())
            if clinic is None:
                report.changes += await _add_practice(session, spec, digest)
                return report
            _set(clinic, _clinic_values(spec), f"clinic {spec.key}", report)
            await _numbers(session, clinic, spec, report)
            doctors = await _doctors(session, clinic, spec, report)
            await _closures(session, clinic, spec, doctors, report)
            if report.changes:
                clinic.revision += 1
            clinic.loaded_digest = digest
            await session.flush()
            affected = await _affected(session, clinic, spec, doctors, clock())
            refused = [a for a in affected if not a.closed]
            if refused:
                raise BookingsAffected(refused, ZoneInfo(spec.timezone))
            if affected:
                report.changes.append(
                    f"{len(affected)} booked appointment(s) fall on a closure: their patients "
                    "will be called to move or cancel")
        return report

    async def once_more_if_added_meanwhile() -> LoadReport:
        try:
            return await run()
        except IntegrityError:  # another load added the practice: its row is there to lock
            return await run()

    return await database.retry_locked(once_more_if_added_meanwhile)


def _set(row: object, values: dict[str, object], label: str, report: LoadReport) -> None:
    changed = [k for k, v in values.items() if getattr(row, k) != v]
    for key in changed:
        setattr(row, key, values[key])
    if changed:
        report.changes.append(f"{label}: {', '.join(changed)} changed")


def _clinic_values(spec: ClinicSpec) -> dict[str, object]:
    """The clinic row's columns as the file gives them, for an insert or a compare."""
    return {
        "name": spec.name, "name_en": spec.name_en, "phone": spec.phone,
        "address": spec.address, "address_en": spec.address_en, "timezone": spec.timezone,
        "weekend": ",".join(str(int(d)) for d in spec.weekend), "office": spec.office,
        "office_hours": None if spec.office_hours is None else office_hours_text(spec.office_hours),
        "dial": spec.dial, "max_channels": spec.max_channels,
        "call_times": spec.call_times.text()}


async def _add_practice(session: AsyncSession, spec: ClinicSpec, digest: str | None
                        ) -> list[str]:
    """A practice not yet in the store, written in one statement a table (a platform's
    first load writes hundreds): nothing of it is there to compare or to affect. Another
    load adding it meanwhile makes the clinic's insert fail, and the load run again."""
    clinic_id = await session.scalar(
        insert(Clinic).values(key=spec.key, revision=1, loaded_digest=digest,
                              **_clinic_values(spec)).returning(Clinic.id))
    changes = [f"clinic {spec.key} added"]
    if spec.numbers:
        await session.execute(insert(ClinicNumber), [
            {"number": number, "clinic_id": clinic_id} for number in spec.numbers])
        changes.append(_numbers_change(spec.key, sorted(spec.numbers), []))
    doctors: dict[str, int] = {}
    if spec.doctors:
        doctors = dict((await session.execute(
            insert(Doctor).returning(Doctor.key, Doctor.id),
            [{"clinic_id": clinic_id, "key": doc.key, "code": doc.code, **_doctor_values(doc)}
             for doc in spec.doctors])).all())
        changes += [f"doctor {doc.key} added" for doc in spec.doctors]
    hours = [row for doc in spec.doctors for row in _hours_rows(doctors[doc.key], doc.hours)]
    if hours:
        await session.execute(insert(WeeklyHours), hours)
    if spec.closures:
        await session.execute(insert(Closure),
                              _closure_rows(clinic_id, _closure_keys(spec, doctors)))
        changes.append(_closures_change(len(spec.closures), 0))
    return changes


async def _held_elsewhere(session: AsyncSession, spec: ClinicSpec
                          ) -> list[tuple[KeyPath, str]]:
    """What the file gives its practice that another practice holds, each with where the file
    says it."""
    numbers = (await session.execute(
        select(ClinicNumber.number, Clinic.key).join(Clinic)
        .where(ClinicNumber.number.in_(spec.numbers), Clinic.key != spec.key)
        .order_by(ClinicNumber.number))).all()
    codes = [d.code for d in spec.doctors if d.code]
    doctors = (await session.execute(
        select(Doctor.code, Doctor.key, Clinic.key).join(Clinic)
        .where(Doctor.code.in_(codes), Clinic.key != spec.key)
        .order_by(Doctor.code))).all()
    at = {d.code: index for index, d in enumerate(spec.doctors) if d.code}
    return ([(("clinic", "numbers", spec.numbers.index(number)),
              f"number {number} reaches clinic {key!r}") for number, key in numbers]
            + [(("doctors", at[code], "code"),
                f"code {code!r} is doctor {doctor}'s in clinic {key!r}")
               for code, doctor, key in doctors])


async def _numbers(session: AsyncSession, clinic: Clinic, spec: ClinicSpec,
                   report: LoadReport) -> None:
    stored = (await session.scalars(
        select(ClinicNumber).where(ClinicNumber.clinic_id == clinic.id))).all()
    have = sorted(n.number for n in stored)
    wanted = sorted(spec.numbers)
    if have == wanted:
        return
    for old in stored:
        if old.number not in wanted:
            await session.delete(old)
    session.add_all(ClinicNumber(number=number, clinic_id=clinic.id)
                    for number in wanted if number not in have)
    report.changes.append(_numbers_change(spec.key, wanted, have))


def _numbers_change(key: str, wanted: list[str], have: list[str]) -> str:
    """What a load reports of a practice's numbers changed (both paths say it alike)."""
    return (f"clinic {key}: numbers {', '.join(wanted) or 'none'} "
            f"(were {', '.join(have) or 'none'})")


def _hours_rows(doctor_id: int, rules: tuple[HoursRule, ...] | list[HoursRule]
                ) -> list[dict[str, object]]:
    """A doctor's weekly hours as rows, for an insert or a compare."""
    return [{"doctor_id": doctor_id, "weekday": int(r.weekday), "start_minute": r.start_minute,
             "end_minute": r.end_minute, "slot_minutes": r.slot_minutes,
             "kinds": ",".join(sorted(r.kinds))} for r in rules]


def _hours_key(rules: list[HoursRule] | tuple[HoursRule, ...]) -> list[tuple[object, ...]]:
    """Weekly hours in an order to compare, whichever order they were written in."""
    return sorted(tuple(row.values())[1:] for row in _hours_rows(0, rules))


def _stored_hours_key(stored: Sequence[WeeklyHours]) -> list[tuple[object, ...]]:
    """Stored hours as `_hours_key` has them, their text as it is: a row edited by hand
    into nonsense is a change the load writes over, not one it fails to read."""
    return sorted((h.weekday, h.start_minute, h.end_minute, h.slot_minutes,
                   ",".join(sorted(h.kinds.split(",")))) for h in stored)


async def _doctors(session: AsyncSession, clinic: Clinic, spec: ClinicSpec, report: LoadReport
                   ) -> dict[str, Doctor]:
    existing = {d.key: d for d in (await session.scalars(
        select(Doctor).where(Doctor.clinic_id == clinic.id))).all()}
    added: set[str] = set()
    for doc in spec.doctors:
        values = _doctor_values(doc)
        row = existing.get(doc.key)
        if row is None:
            row = Doctor(clinic_id=clinic.id, key=doc.key, **values)
            session.add(row)
            await session.flush()
            existing[doc.key] = row
            added.add(doc.key)
            report.changes.append(f"doctor {doc.key} added")
        else:
            _set(row, values, f"doctor {doc.key}", report)
        stored = (await session.scalars(
            select(WeeklyHours).where(WeeklyHours.doctor_id == row.id))).all()
        if _stored_hours_key(stored) != _hours_key(doc.hours):
            for old in stored:
                await session.delete(old)
            session.add_all(WeeklyHours(**values) for values in _hours_rows(row.id, doc.hours))
            if stored:
                report.changes.append(f"doctor {doc.key}: weekly hours changed")
    listed = {d.key for d in spec.doctors}
    for key, row in existing.items():
        if key not in listed and row.active:
            row.active = False
            report.changes.append(f"doctor {key} removed (kept as inactive for history)")
    await _codes(session, spec, existing, added, report)
    return existing


async def _codes(session: AsyncSession, spec: ClinicSpec, doctors: dict[str, Doctor],
                 added: set[str], report: LoadReport) -> None:
    """Codes are unique across the store, so one moving between two doctors is first taken
    from every row that changes, then given; a doctor dropped from the file frees theirs."""
    wanted = {d.key: d.code for d in spec.doctors}
    changing = [row for key, row in doctors.items() if row.code != wanted.get(key)]
    if not changing:
        return
    for row in changing:
        if row.key in wanted and row.key not in added:
            report.changes.append(f"doctor {row.key}: code {wanted[row.key] or 'none'} "
                                  f"(was {row.code or 'none'})")
        row.code = None
    await session.flush()
    for row in changing:
        row.code = wanted.get(row.key)


def _doctor_values(doc: DoctorSpec) -> dict[str, object]:
    return {"name": doc.name, "name_en": doc.name_en, "specialty": doc.specialty,
            "phone": doc.phone, "languages": ",".join(doc.languages), "active": True}


async def _closures(session: AsyncSession, clinic: Clinic, spec: ClinicSpec,
                    doctors: dict[str, Doctor], report: LoadReport) -> None:
    wanted = _closure_keys(spec, {key: d.id for key, d in doctors.items()})
    stored = (await session.scalars(select(Closure).where(
        Closure.clinic_id == clinic.id, Closure.source == "file"))).all()
    have = sorted((c.doctor_id or 0, c.first_day, c.last_day, c.reason) for c in stored)
    if wanted == have:
        return
    for old in stored:
        await session.delete(old)
    session.add_all(Closure(**values) for values in _closure_rows(clinic.id, wanted))
    report.changes.append(_closures_change(len(wanted), len(have)))


ClosureKey = tuple[int, dt.date, dt.date, str]
"""A closure as a load compares it: doctor id (0 for the whole clinic), days, reason."""


def _closure_keys(spec: ClinicSpec, doctors: dict[str, int]) -> list[ClosureKey]:
    """The file's closures in an order to compare, given the doctors' ids by key."""
    return sorted((doctors[c.doctor] if c.doctor else 0, c.first_day, c.last_day, c.reason)
                  for c in spec.closures)


def _closure_rows(clinic_id: int, keys: list[ClosureKey]) -> list[dict[str, object]]:
    """Those closures as rows, for an insert."""
    return [{"clinic_id": clinic_id, "doctor_id": doctor or None, "first_day": first,
             "last_day": last, "reason": reason} for doctor, first, last, reason in keys]


def _closures_change(listed: int, were: int) -> str:
    """What a load reports of a practice's closures changed (both paths say it alike)."""
    return f"closures: {listed} listed (were {were})"


async def _affected(session: AsyncSession, clinic: Clinic, spec: ClinicSpec,
                    doctors: dict[str, Doctor], now: dt.datetime) -> list[AffectedBooking]:
    tz = ZoneInfo(spec.timezone)
    specs = {d.key: d for d in spec.doctors}
    rows = (await session.execute(
        select(Appointment, Doctor.key, Patient.phone)
        .join(Doctor, Appointment.doctor_id == Doctor.id)
        .join(Patient, Appointment.patient_id == Patient.id)
        .where(Doctor.clinic_id == clinic.id, Appointment.status == AppointmentStatus.BOOKED,
               Appointment.start_at > now)
        .order_by(Appointment.start_at))).all()
    affected = []
    for appointment, key, phone in rows:
        reason = _conflict(appointment, specs.get(key), spec, tz)
        if reason:
            affected.append(AffectedBooking(appointment.code, key, appointment.start_at, phone,
                                            reason, reason.startswith(CLOSURE_CONFLICT)))
    return affected


def _conflict(appointment: Appointment, doctor: DoctorSpec | None, spec: ClinicSpec,
              tz: ZoneInfo) -> str | None:
    if doctor is None:
        return "the doctor is no longer listed"
    day = appointment.start_at.astimezone(tz).date()
    slot = next((s for s in day_slots(day, doctor.hours, tz)
                 if s.start == appointment.start_at and s.end == appointment.end_at), None)
    if slot is None:
        return "no longer inside the doctor's weekly hours"
    if VisitKind(appointment.kind) not in slot.kinds:
        return f"the hours no longer offer {appointment.kind.replace('_', ' ')} visits"
    for closure in spec.closures:
        if closure.doctor not in (None, doctor.key):
            continue
        span = day_bounds(closure.first_day, tz).start, day_bounds(closure.last_day, tz).end
        if span[0] < appointment.end_at and appointment.start_at < span[1]:
            return f"{CLOSURE_CONFLICT} ({closure.reason or 'no reason given'})"
    return None


async def record_absence(database: Database, doctor_key: str | None, first: dt.date,
                         last: dt.date, reason: str, practice: str | None = None) -> int:
    """Close days for one doctor (or the clinic) of a practice (by key; None: the first)
    from the status page; kept across loads of the clinic file. Returns how many booked
    appointments it covers (their patients are called)."""

    async def run() -> int:
        async with database.writing() as session:
            clinic = await session.scalar(
                select(Clinic).order_by(Clinic.id).limit(1) if practice is None
                else select(Clinic).where(Clinic.key == practice))
            if clinic is None:
                raise ValueError("no clinic is loaded yet")
            doctor = None
            if doctor_key is not None:
                doctor = await session.scalar(select(Doctor).where(
                    Doctor.clinic_id == clinic.id, Doctor.key == doctor_key,
                    Doctor.active.is_(True)))
                if doctor is None:
                    raise ValueError(f"no doctor {doctor_key!r}")
            session.add(Closure(clinic_id=clinic.id, doctor_id=doctor.id if doctor else None,
                                first_day=first, last_day=last, reason=reason, source="page"))
            clinic.revision += 1
            tz = ZoneInfo(clinic.timezone)
            query = select(func.count(Appointment.id)).where(
                Appointment.doctor_id.in_(select(Doctor.id).where(Doctor.clinic_id == clinic.id)),
                Appointment.status == AppointmentStatus.BOOKED,
                Appointment.start_at >= day_bounds(first, tz).start,
                Appointment.start_at < day_bounds(last, tz).end)
            if doctor is not None:
                query = query.where(Appointment.doctor_id == doctor.id)
            return await session.scalar(query) or 0

    if last < first:
        raise ValueError("the last day comes before the first")
    return await database.retry_locked(run)


@dataclass(frozen=True)
class RecordedAbsence:
    """A closure staff recorded on the status page (those from the file are edited there)."""

    id: int
    doctor: str | None
    """The doctor's English name; None for the whole clinic."""
    first_day: dt.date
    last_day: dt.date
    reason: str
    practice: str
    """Its practice's key."""


async def recorded_absences(database: Database, since: dt.date, clinic: int | None = None
                            ) -> list[RecordedAbsence]:
    """Page-recorded closures not over before `since`, soonest first: one practice's (by
    clinic id), or every practice's."""
    mine = true() if clinic is None else Closure.clinic_id == clinic
    async with database.reading() as session:
        rows = (await session.execute(
            select(*columns_of(RecordedAbsence, id=Closure.id, doctor=Doctor.name_en,
                               first_day=Closure.first_day, last_day=Closure.last_day,
                               reason=Closure.reason, practice=Clinic.key))
            .join(Clinic, Closure.clinic_id == Clinic.id)
            .outerjoin(Doctor, Closure.doctor_id == Doctor.id)
            .where(Closure.source == "page", Closure.last_day >= since, mine)
            .order_by(Closure.first_day, Closure.id))).all()
    return [record_of(RecordedAbsence, row) for row in rows]


async def lift_absence(database: Database, closure_id: int, practice: int | None = None
                       ) -> bool:
    """Remove a closure recorded on the page (a mistake, or the doctor comes after all);
    absence calls not yet made are then dropped when they come due. False if there is none,
    or none of the practice's (by clinic id) when one is named."""

    async def run() -> bool:
        async with database.writing() as session:
            closure = await session.get(Closure, closure_id)
            if (closure is None or closure.source != "page"
                    or practice not in (None, closure.clinic_id)):
                return False
            clinic = await session.get(Clinic, closure.clinic_id)
            await session.delete(closure)
            if clinic is not None:
                clinic.revision += 1
            return True

    return await database.retry_locked(run)
