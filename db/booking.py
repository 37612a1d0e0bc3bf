"""The booking service: the one writer of appointments, safe under racing callers and processes."""

from __future__ import annotations

import datetime as dt
import enum
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clinic import phones
from clinic.calendar import Weekday
from clinic.schedule import HoursRule, Interval, Slot, VisitKind, day_bounds, free_slots
from db.engine import Database
from db.models import (
    Appointment,
    AppointmentEvent,
    Clinic,
    Closure,
    Consultation,
    Doctor,
    Patient,
    WeeklyHours,
)

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """Return the current instant, aware, in UTC."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class BookingPolicy:
    """The clinic's rules for how soon, how far ahead and how late bookings may change."""

    min_notice: dt.timedelta = dt.timedelta(minutes=30)
    change_cutoff: dt.timedelta = dt.timedelta(hours=2)
    horizon_days: int = 14


@dataclass(frozen=True)
class DoctorView:
    """A doctor as callers and menus see them."""

    id: int
    key: str
    name: str
    name_en: str
    specialty: str
    languages: tuple[str, ...]


@dataclass(frozen=True)
class ClinicProfile:
    """What the phone line says about the clinic, read from the store (the single truth)."""

    name: str
    name_en: str
    phone: str
    address: str
    address_en: str
    tz: ZoneInfo
    doctors: tuple[DoctorView, ...]


@dataclass(frozen=True)
class AppointmentView:
    """A booking as it is read back to the caller."""

    id: int
    code: str
    doctor: DoctorView
    patient_phone: str
    start: dt.datetime
    end: dt.datetime
    kind: VisitKind
    status: str


class Refusal(enum.StrEnum):
    """Why a request was turned down; each has a prompt of its own in the IVR."""

    UNKNOWN_DOCTOR = "unknown_doctor"
    NOT_A_SLOT = "not_a_slot"
    TOO_SOON = "too_soon"
    TOO_FAR = "too_far"
    KIND_NOT_OFFERED = "kind_not_offered"
    NOT_FOUND = "not_found"
    PAST_CUTOFF = "past_cutoff"


@dataclass(frozen=True)
class Booked:
    """The appointment is written (booked or moved)."""

    appointment: AppointmentView


@dataclass(frozen=True)
class Cancelled:
    """The appointment is cancelled and its slot is free again."""

    appointment: AppointmentView


@dataclass(frozen=True)
class SlotTaken:
    """Someone else got the slot first; the nearest free ones are offered instead."""

    alternatives: tuple[Slot, ...]


@dataclass(frozen=True)
class Refused:
    """The request breaks a rule; nothing was written."""

    reason: Refusal
    detail: str = ""


BookingResult = Booked | SlotTaken | Refused
CancelResult = Cancelled | Refused


@dataclass(frozen=True)
class _Checked:
    """A slot found free, for a doctor, under one revision of the clinic's schedule."""

    slot: Slot
    doctor: DoctorView
    revision: int


@dataclass(frozen=True)
class _Lost:
    """The slot was gone inside the transaction; alternatives are looked up after it closes."""

    doctor_id: int
    start: dt.datetime


class BookingService:
    """Reads schedules and writes bookings; every write is one transaction."""

    def __init__(self, database: Database, policy: BookingPolicy | None = None,
                 clock: Clock = utc_now) -> None:
        self.db = database
        self.policy = policy or BookingPolicy()
        self.clock = clock
        self._hours: dict[int, _Hours] = {}

    async def clinic_profile(self) -> ClinicProfile | None:
        """The clinic's words and doctors, or None before any clinic file was loaded."""
        async with self.db.reading() as session:
            clinic = await session.scalar(select(Clinic).order_by(Clinic.id).limit(1))
        if clinic is None:
            return None
        return ClinicProfile(clinic.name, clinic.name_en, clinic.phone, clinic.address,
                             clinic.address_en, ZoneInfo(clinic.timezone),
                             tuple(await self.doctors()))

    async def closed_on(self, day: dt.date) -> bool:
        """Whether the whole clinic is closed that day (a holiday in the clinic file)."""
        async with self.db.reading() as session:
            found = await session.scalar(select(Closure.id).where(
                Closure.doctor_id.is_(None), Closure.first_day <= day, Closure.last_day >= day))
        return found is not None

    async def doctors(self, specialty: str | None = None) -> list[DoctorView]:
        """Active doctors, optionally of one specialty, in a stable order for menus."""
        query = select(Doctor).where(Doctor.active.is_(True)).order_by(Doctor.id)
        if specialty is not None:
            query = query.where(Doctor.specialty == specialty)
        async with self.db.reading() as session:
            return [_doctor_view(d) for d in (await session.scalars(query)).all()]

    async def weekly_hours(self, doctor_id: int) -> list[HoursRule]:
        """A doctor's weekly blocks, Saturday first, for "hours" announcements."""
        async with self.db.reading() as session:
            rules = await _rules(session, doctor_id)
        return sorted(rules, key=lambda r: (r.weekday, r.start_minute))

    async def free_slots(self, doctor_id: int, day: dt.date) -> list[Slot]:
        """Slots of a local day that a caller may book now."""
        async with self.db.reading() as session:
            schedule = await _Schedule.read(session, doctor_id, day, day, self._hours)
        return [] if schedule is None else self._open(schedule, day)

    async def next_free_days(self, doctor_id: int, limit: int = 3) -> list[dt.date]:
        """The next local days within the horizon that still have a free slot."""
        schedule, days = await self._horizon(doctor_id)
        return [day for day in days if schedule and self._open(schedule, day)][:limit]

    async def nearest_free(self, doctor_id: int, around: dt.datetime, limit: int = 3
                           ) -> list[Slot]:
        """Free slots closest in time to one that was lost, searching outward day by day."""
        schedule, days = await self._horizon(doctor_id)
        if schedule is None:
            return []
        target = around.astimezone(schedule.tz).date()
        candidates: list[Slot] = []
        enough_at: int | None = None
        for day in sorted(days, key=lambda d: abs((d - target).days)):
            distance = abs((day - target).days)
            if enough_at is not None and distance > enough_at + 1:
                break
            candidates.extend(self._open(schedule, day))
            if enough_at is None and len(candidates) >= limit:
                enough_at = distance
        candidates.sort(key=lambda s: (abs(s.start - around), s.start))
        return sorted(candidates[:limit])

    async def upcoming(self, phone: str) -> list[AppointmentView]:
        """The caller's booked appointments that have not started yet."""
        number = phones.normalize(phone)
        query = _appointments().where(Patient.phone == number, Appointment.status == "booked",
                                      Appointment.start_at > self.clock())
        async with self.db.reading() as session:
            rows = (await session.execute(query.order_by(Appointment.start_at))).all()
        return [_appointment_view(*row) for row in rows]

    async def find_by_code(self, phone: str, code: str) -> AppointmentView | None:
        """A booked appointment by its code, only if it belongs to that number."""
        number = phones.normalize(phone)
        query = _appointments().where(Patient.phone == number, Appointment.code == code,
                                      Appointment.status == "booked")
        async with self.db.reading() as session:
            row = (await session.execute(query)).first()
        return None if row is None else _appointment_view(*row)

    async def appointment(self, appointment_id: int) -> AppointmentView | None:
        """One appointment as it stands now, whatever its status."""
        async with self.db.reading() as session:
            row = (await session.execute(
                _appointments().where(Appointment.id == appointment_id))).first()
        return None if row is None else _appointment_view(*row)

    async def book(self, phone: str, doctor_id: int, start: dt.datetime, kind: VisitKind,
                   via: str = "ivr", language: str = "fa") -> BookingResult:
        """Book a slot; a lost race answers SlotTaken with alternatives, never an exception.

        A first check outside the write lock turns most losers of a rush away cheaply; the
        check inside the transaction and the unique index decide.
        """
        number = phones.normalize(phone)
        async with self.db.reading() as session:
            early = await self._check_slot(session, doctor_id, start, kind)
        if isinstance(early, Refused):
            return early
        if isinstance(early, _Lost):
            return await self._alternatives(early)

        async def attempt(session: AsyncSession) -> BookingResult | _Lost:
            checked = await self._recheck(session, early, start, kind)
            if not isinstance(checked, _Checked):
                return checked
            slot = checked.slot
            now = self.clock()
            patient = await _patient(session, number, language, now)
            appointment = Appointment(
                doctor_id=doctor_id, patient_id=patient.id, start_at=slot.start,
                end_at=slot.end, kind=kind.value, status="booked", code=_new_code(),
                created_via=via, created_at=now, updated_at=now)
            session.add(appointment)
            await session.flush()
            session.add(AppointmentEvent(appointment_id=appointment.id, at=now, action="booked",
                                         via=via, new_start=slot.start))
            if kind is VisitKind.PHONE:
                session.add(Consultation(appointment_id=appointment.id, due_at=slot.start,
                                         state="scheduled", attempts=0, updated_at=now))
            return Booked(AppointmentView(appointment.id, appointment.code, checked.doctor,
                                          number, slot.start, slot.end, kind, "booked"))

        return await self._write(attempt, doctor_id, start)

    async def _recheck(self, session: AsyncSession, early: _Checked, start: dt.datetime,
                       kind: VisitKind) -> _Checked | Refused | _Lost:
        """Inside the write lock: the slot must still be free; the whole check runs again
        only if a clinic load changed the schedule since the check outside the lock."""
        revision = await session.scalar(select(Clinic.revision).join(Doctor).where(
            Doctor.id == early.doctor.id))
        if revision != early.revision:
            return await self._check_slot(session, early.doctor.id, start, kind)
        if await _overlapping(session, early.doctor.id, early.slot.interval):
            return _Lost(early.doctor.id, start)
        return early

    async def reschedule(self, appointment_id: int, owner_phone: str, new_start: dt.datetime,
                         via: str = "ivr") -> BookingResult:
        """Move a booking in one transaction: the old slot is freed only if the new one is won."""
        number = phones.normalize(owner_phone)

        async def attempt(session: AsyncSession) -> BookingResult | _Lost:
            appointment = await self._owned(session, appointment_id, number)
            if isinstance(appointment, Refused):
                return appointment
            checked = await self._check_slot(session, appointment.doctor_id, new_start,
                                             VisitKind(appointment.kind), moving=appointment.id)
            if not isinstance(checked, _Checked):
                return checked
            slot = checked.slot
            now = self.clock()
            session.add(AppointmentEvent(appointment_id=appointment.id, at=now,
                                         action="rescheduled", via=via,
                                         old_start=appointment.start_at, new_start=slot.start))
            appointment.start_at, appointment.end_at = slot.start, slot.end
            appointment.updated_at = now
            consultation = await _consultation(session, appointment.id)
            if consultation is not None:
                consultation.due_at, consultation.state = slot.start, "scheduled"
                consultation.attempts, consultation.claimed_by = 0, None
                consultation.lease_until, consultation.updated_at = None, now
            await session.flush()
            return Booked(await _view(session, appointment.id))

        lookup = await self._doctor_of(appointment_id)
        return await self._write(attempt, lookup, new_start)

    async def cancel(self, appointment_id: int, owner_phone: str, via: str = "ivr"
                     ) -> CancelResult:
        """Cancel a booking of the caller's own, unless it starts within the cut-off."""
        number = phones.normalize(owner_phone)

        async def attempt(session: AsyncSession) -> CancelResult:
            appointment = await self._owned(session, appointment_id, number)
            if isinstance(appointment, Refused):
                return appointment
            now = self.clock()
            appointment.status, appointment.updated_at = "cancelled", now
            session.add(AppointmentEvent(appointment_id=appointment.id, at=now,
                                         action="cancelled", via=via,
                                         old_start=appointment.start_at))
            consultation = await _consultation(session, appointment.id)
            if consultation is not None:
                consultation.state, consultation.updated_at = "cancelled", now
            await session.flush()
            return Cancelled(await _view(session, appointment.id))

        async def run() -> CancelResult:
            async with self.db.writing() as session:
                return await attempt(session)

        return await self.db.retry_locked(run)

    async def _write(self, attempt: Callable[[AsyncSession], Awaitable[BookingResult | _Lost]],
                     doctor_id: int | None, start: dt.datetime) -> BookingResult:
        """Run one booking transaction; a lost slot, by check or by constraint, is SlotTaken."""

        async def run() -> BookingResult | _Lost:
            for _ in range(10):
                try:
                    async with self.db.writing() as session:
                        return await attempt(session)
                except IntegrityError as exc:
                    if doctor_id is not None and await self._slot_occupied(doctor_id, start):
                        return _Lost(doctor_id, start)
                    failure = exc
            raise failure

        result = await self.db.retry_locked(run)
        return await self._alternatives(result) if isinstance(result, _Lost) else result

    async def _alternatives(self, lost: _Lost) -> SlotTaken:
        return SlotTaken(tuple(await self.nearest_free(lost.doctor_id, lost.start)))

    async def _doctor_of(self, appointment_id: int) -> int | None:
        async with self.db.reading() as session:
            return await session.scalar(
                select(Appointment.doctor_id).where(Appointment.id == appointment_id))

    async def _slot_occupied(self, doctor_id: int, start: dt.datetime) -> bool:
        async with self.db.reading() as session:
            found = await session.scalar(
                select(Appointment.id).where(Appointment.doctor_id == doctor_id,
                                             Appointment.start_at == start,
                                             Appointment.status != "cancelled"))
        return found is not None

    async def _owned(self, session: AsyncSession, appointment_id: int, number: str
                     ) -> Appointment | Refused:
        appointment = await session.scalar(
            select(Appointment).join(Patient).where(Appointment.id == appointment_id,
                                                    Patient.phone == number,
                                                    Appointment.status == "booked"))
        if appointment is None:
            return Refused(Refusal.NOT_FOUND, "no booked appointment of this caller has that id")
        if appointment.start_at - self.clock() < self.policy.change_cutoff:
            hours = self.policy.change_cutoff.total_seconds() / 3600
            return Refused(Refusal.PAST_CUTOFF,
                           f"changes close {hours:g} hours before the appointment")
        consultation = await _consultation(session, appointment.id)
        if consultation is not None and consultation.state in LIVE_CALL:
            return Refused(Refusal.PAST_CUTOFF, "the consultation call is under way")
        return appointment

    async def _check_slot(self, session: AsyncSession, doctor_id: int, start: dt.datetime,
                          kind: VisitKind, moving: int | None = None
                          ) -> _Checked | Refused | _Lost:
        probe = await session.scalar(select(Clinic.timezone).join(Doctor).where(
            Doctor.id == doctor_id))
        day = start.astimezone(ZoneInfo(probe or "Asia/Tehran")).date()
        schedule = await _Schedule.read(session, doctor_id, day, day, self._hours,
                                         ignore=moving)
        if schedule is None:
            return Refused(Refusal.UNKNOWN_DOCTOR)
        now = self.clock()
        if start < now + self.policy.min_notice:
            return Refused(Refusal.TOO_SOON)
        if day > now.astimezone(schedule.tz).date() + dt.timedelta(days=self.policy.horizon_days):
            return Refused(Refusal.TOO_FAR)
        slot = next((s for s in free_slots(day, schedule.rules, closures=schedule.closures,
                                           not_before=start, tz=schedule.tz)
                     if s.start == start), None)
        if slot is None:
            return Refused(Refusal.NOT_A_SLOT)
        if kind not in slot.kinds:
            return Refused(Refusal.KIND_NOT_OFFERED)
        if any(slot.interval.overlaps(b) for b in schedule.booked):
            return _Lost(doctor_id, start)
        return _Checked(slot, _doctor_view(schedule.doctor), schedule.revision)

    async def _horizon(self, doctor_id: int) -> tuple[_Schedule | None, list[dt.date]]:
        async with self.db.reading() as session:
            tz_name = await session.scalar(select(Clinic.timezone).join(Doctor).where(
                Doctor.id == doctor_id))
            today = self.clock().astimezone(ZoneInfo(tz_name or "Asia/Tehran")).date()
            days = [today + dt.timedelta(days=n) for n in range(self.policy.horizon_days + 1)]
            return await _Schedule.read(session, doctor_id, days[0], days[-1],
                                        self._hours), days

    def _open(self, schedule: _Schedule, day: dt.date) -> list[Slot]:
        return free_slots(day, schedule.rules, closures=schedule.closures,
                          booked=schedule.booked, not_before=self.clock() + self.policy.min_notice,
                          tz=schedule.tz)


@dataclass(frozen=True)
class _Schedule:
    """One doctor's hours, closures and bookings over a span of days."""

    doctor: Doctor
    tz: ZoneInfo
    rules: list[HoursRule]
    closures: list[Interval]
    booked: list[Interval]
    revision: int

    @classmethod
    async def read(cls, session: AsyncSession, doctor_id: int, first: dt.date, last: dt.date,
                   cache: dict[int, _Hours], ignore: int | None = None) -> _Schedule | None:
        """Read what decides free slots from `first` to `last`; None for an unknown doctor.

        Hours and closures change only with a clinic load, which bumps the clinic's revision;
        so they come from `cache` while the revision stands, and only bookings are read.
        """
        row = (await session.execute(select(Doctor, Clinic.timezone, Clinic.revision).join(
            Clinic).where(Doctor.id == doctor_id, Doctor.active.is_(True)))).first()
        if row is None:
            return None
        doctor, tz, revision = row[0], ZoneInfo(row[1]), row[2]
        hours = cache.get(doctor_id)
        if hours is None or hours.revision != revision:
            hours = cache[doctor_id] = await _Hours.read(session, doctor, revision)
        span = Interval(day_bounds(first, tz).start, day_bounds(last, tz).end)
        query = select(Appointment.start_at, Appointment.end_at).where(
            Appointment.doctor_id == doctor_id, Appointment.status != "cancelled",
            Appointment.start_at < span.end, Appointment.end_at > span.start)
        if ignore is not None:
            query = query.where(Appointment.id != ignore)
        booked = [Interval(s, e) for s, e in (await session.execute(query)).all()]
        closures = [Interval(day_bounds(a, tz).start, day_bounds(b, tz).end)
                    for a, b in hours.closed if a <= last and b >= first]
        return cls(doctor, tz, hours.rules, closures, booked, revision)


@dataclass(frozen=True)
class _Hours:
    """A doctor's weekly rules and closed days as of one clinic revision."""

    revision: int
    rules: list[HoursRule]
    closed: list[tuple[dt.date, dt.date]]

    @classmethod
    async def read(cls, session: AsyncSession, doctor: Doctor, revision: int) -> _Hours:
        """Read them from the store."""
        closures = (await session.execute(select(Closure.first_day, Closure.last_day).where(
            Closure.clinic_id == doctor.clinic_id,
            (Closure.doctor_id.is_(None)) | (Closure.doctor_id == doctor.id)))).all()
        return cls(revision, await _rules(session, doctor.id), [(a, b) for a, b in closures])


LIVE_CALL = ("dialling", "bridged")
"""Consultation states during which the booking cannot move or go: the phones are ringing."""


async def _consultation(session: AsyncSession, appointment_id: int) -> Consultation | None:
    return await session.scalar(
        select(Consultation).where(Consultation.appointment_id == appointment_id))


def _new_code() -> str:
    return str(100000 + secrets.randbelow(900000))


async def _rules(session: AsyncSession, doctor_id: int) -> list[HoursRule]:
    rows = (await session.scalars(
        select(WeeklyHours).where(WeeklyHours.doctor_id == doctor_id))).all()
    return [rule_of(row) for row in rows]


def rule_of(row: WeeklyHours) -> HoursRule:
    """Turn a stored block back into the domain's rule."""
    return HoursRule(Weekday(row.weekday), row.start_minute, row.end_minute, row.slot_minutes,
                     frozenset(VisitKind(k) for k in row.kinds.split(",")))


async def _patient(session: AsyncSession, number: str, language: str, now: dt.datetime
                   ) -> Patient:
    patient = await session.scalar(select(Patient).where(Patient.phone == number))
    if patient is None:
        patient = Patient(phone=number, language=language, created_at=now)
        session.add(patient)
        await session.flush()
    return patient


def _appointments() -> Select[tuple[Appointment, Doctor, Patient]]:
    return select(Appointment, Doctor, Patient).join(
        Doctor, Appointment.doctor_id == Doctor.id).join(
        Patient, Appointment.patient_id == Patient.id)


async def _view(session: AsyncSession, appointment_id: int) -> AppointmentView:
    row = (await session.execute(_appointments().where(Appointment.id == appointment_id))).one()
    return _appointment_view(*row)


def _doctor_view(doctor: Doctor) -> DoctorView:
    return DoctorView(doctor.id, doctor.key, doctor.name, doctor.name_en, doctor.specialty,
                      tuple(doctor.languages.split(",")))


def _appointment_view(appointment: Appointment, doctor: Doctor, patient: Patient
                      ) -> AppointmentView:
    return AppointmentView(appointment.id, appointment.code, _doctor_view(doctor), patient.phone,
                           appointment.start_at, appointment.end_at, VisitKind(appointment.kind),
                           appointment.status)


async def _overlapping(session: AsyncSession, doctor_id: int, span: Interval) -> bool:
    found = await session.scalar(select(Appointment.id).where(
        Appointment.doctor_id == doctor_id, Appointment.status != "cancelled",
        Appointment.start_at < span.end, Appointment.end_at > span.start).limit(1))
    return found is not None
