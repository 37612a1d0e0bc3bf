"""The booking service: the one writer of appointments, safe under racing callers and processes."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import functools
import itertools
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BindParameter,
    Column,
    ColumnElement,
    Select,
    bindparam,
    insert,
    literal,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from clinic import phones
from clinic.schedule import (
    HoursRule,
    Interval,
    Slot,
    Taken,
    VisitKind,
    day_bounds,
    open_slots,
)
from db.availability import (
    STILL_FREE,
    Availability,
    Catalog,
    ClinicProfile,
    DoctorView,
    Grid,
    doctor_view,
    span_params,
)
from db.consultations import (
    call_under_way,
    cancel_consultation,
    move_consultation,
    new_consultation,
)
from db.engine import Clock, Database, utc_now
from db.lifecycles import AppointmentStatus
from db.models import (
    HOLDS_ITS_SLOT,
    Appointment,
    AppointmentEvent,
    Doctor,
    Patient,
)
from db.reads import Rows, within

__all__ = ["ClinicProfile", "DoctorView"]

_APPOINTMENT, _PATIENT = Appointment.__table__, Patient.__table__
_EVENT = AppointmentEvent.__table__
_NEW_APPOINTMENT = insert(_APPOINTMENT).returning(_APPOINTMENT.c.id)
_NEW_EVENT = insert(_EVENT)
_PATIENT_OF = select(_PATIENT.c.id).where(_PATIENT.c.phone == bindparam("phone"))
_NEW_PATIENT = insert(_PATIENT).returning(_PATIENT.c.id)
"""A booking's rows, written by Core statements built once: the ORM's unit of work, and a
statement built per booking, cost its write more than the statements themselves
(bench.ivr_load, profiled)."""

CALL_UNDER_WAY = "the consultation call is under way"
"""Why a booking may not move or go while its consultation is dialled or talked."""


@dataclass(frozen=True)
class BookingPolicy:
    """The clinic's rules for how soon, how far ahead and how late bookings may change."""

    min_notice: dt.timedelta = dt.timedelta(minutes=30)
    change_cutoff: dt.timedelta = dt.timedelta(hours=2)
    horizon_days: int = 14


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
                 clock: Clock = utc_now, practice: str | None = None) -> None:
        self.db = database
        self.policy = policy or BookingPolicy()
        self.clock = clock
        self.practice = practice
        """The practice's key this service books for; None: the first (and only) one."""
        self.availability = Availability(database.rows, practice, database.batches)
        self._turns = _Turns()
        self._add_rows = _add_row_by_row if database.is_sqlite else _add_in_one_statement
        """How a booking's rows are written (below): one statement where it saves round
        trips."""
        self._at_once = not database.is_sqlite
        """PostgreSQL: a visit in person's booking is one statement outside a transaction,
        which writes only if the slot checked is still free then (`_book_at_once`)."""

    def _appointments(self) -> Select[tuple[Appointment, Doctor, Patient]]:
        """Appointments with their doctor and patient, of this practice's doctors only: a
        caller of one practice never reaches another's bookings."""
        return _appointments().where(Doctor.clinic_id == self.availability.clinic)

    async def clinic_profile(self) -> ClinicProfile | None:
        """The clinic's words and doctors, or None before any clinic file was loaded."""
        catalog = await self.availability.catalog(self.db.rows)
        return None if catalog is None else catalog.profile

    async def closed_on(self, day: dt.date) -> bool:
        """Whether the whole clinic is closed that day (a holiday in the clinic file)."""
        catalog = await self.availability.catalog(self.db.rows)
        return catalog is not None and any(a <= day <= b for a, b in catalog.clinic_closed)

    async def doctors(self, specialty: str | None = None) -> list[DoctorView]:
        """Active doctors, optionally of one specialty, in a stable order for menus."""
        profile = await self.clinic_profile()
        return [] if profile is None else [
            d for d in profile.doctors if specialty is None or d.specialty == specialty]

    async def weekly_hours(self, doctor_id: int) -> list[HoursRule]:
        """A doctor's weekly blocks, Saturday first, for "hours" announcements."""
        catalog = await self.availability.catalog(self.db.rows)
        grid = None if catalog is None else catalog.grids.get(doctor_id)
        return [] if grid is None else sorted(grid.rules,
                                              key=lambda r: (r.weekday, r.start_minute))

    async def free_slots(self, doctor_id: int, day: dt.date) -> list[Slot]:
        """Slots of a local day that a caller may book now."""
        schedule = await self._schedule(self.db.rows, doctor_id, lambda _: (day, day))
        return [] if schedule is None else list(self._open(schedule, day))

    async def next_free_days(self, doctor_id: int, limit: int = 3) -> list[dt.date]:
        """The next local days within the horizon that still have a free slot."""
        schedule = await self._horizon(doctor_id)
        if schedule is None:
            return []
        return list(itertools.islice(
            (day for day in schedule.days if next(self._open(schedule, day), None)), limit))

    async def nearest_free(self, doctor_id: int, around: dt.datetime, limit: int = 3
                           ) -> list[Slot]:
        """Free slots closest in time to one that was lost, searching outward day by day."""
        schedule = await self._horizon(doctor_id)
        if schedule is None:
            return []
        target = around.astimezone(schedule.tz).date()
        candidates: list[Slot] = []
        enough_at: int | None = None
        for day in sorted(schedule.days, key=lambda d: abs((d - target).days)):
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
        query = self._appointments().where(Patient.phone == number,
                                           Appointment.status == AppointmentStatus.BOOKED,
                                           Appointment.start_at > self.clock())
        async with self.db.reading() as session:
            rows = (await session.execute(query.order_by(Appointment.start_at))).all()
        return [_appointment_view(*row) for row in rows]

    async def find_by_code(self, phone: str, code: str) -> AppointmentView | None:
        """A booked appointment by its code, only if it belongs to that number."""
        number = phones.normalize(phone)
        query = self._appointments().where(
            Patient.phone == number, Appointment.code == code,
            Appointment.status == AppointmentStatus.BOOKED)
        async with self.db.reading() as session:
            row = (await session.execute(query)).first()
        return None if row is None else _appointment_view(*row)

    async def appointment(self, appointment_id: int) -> AppointmentView | None:
        """One appointment as it stands now, whatever its status."""
        async with self.db.reading() as session:
            row = (await session.execute(
                self._appointments().where(Appointment.id == appointment_id))).first()
        return None if row is None else _appointment_view(*row)

    async def book(self, phone: str, doctor_id: int, start: dt.datetime, kind: VisitKind,
                   via: str = "ivr", language: str = "fa") -> BookingResult:
        """Book a slot; a lost race answers SlotTaken with alternatives, never an exception.

        A first check outside the write lock turns most losers of a rush away cheaply, and this
        process's callers of one slot take turns; on PostgreSQL a visit in person is then
        written in one statement that writes only while the slot is still free, and
        otherwise the check inside the transaction and the unique index decide.
        """
        number = phones.normalize(phone)
        async with self._turns.of((doctor_id, start)):
            early = await self._check_slot(self.db.rows, doctor_id, start, kind)
            outcome: BookingResult | _Lost | _Checked = early
            if isinstance(early, _Checked) and self._at_once and kind is not VisitKind.PHONE:
                outcome = await self._book_at_once(number, early, kind, via, language)
            if isinstance(outcome, _Checked):  # not written at once: the transaction decides
                outcome = await self._write(self._booking(number, early, kind, via, language),
                                            doctor_id, start)
        return await self._alternatives(outcome) if isinstance(outcome, _Lost) else outcome

    async def _book_at_once(self, number: str, early: _Checked, kind: VisitKind, via: str,
                            language: str) -> Booked | _Lost | _Checked:
        """PostgreSQL: the booking as one statement of its own, with no BEGIN or COMMIT to
        wait for, written only if the slot is still free under the schedule checked;
        `early` back when it was not written (the transaction then decides, and says why)."""
        slot, code = early.slot, _new_code()
        appointment = _appointment_row(early, kind, code, via, self.clock())
        try:
            rows = await self.db.rows(_PG_BOOKING_IF_FREE, dict(
                appointment, **span_params(early.doctor.id, slot.interval), phone=number,
                language=language, revision=early.revision))
        except IntegrityError:  # the slot won by another booking, or the code drawn twice
            occupied = await self._slot_occupied(early.doctor.id, slot.start)
            return _Lost(early.doctor.id, slot.start) if occupied else early
        return _booked(rows[0][0], code, early, number, kind) if rows else early

    def _booking(self, number: str, early: _Checked, kind: VisitKind, via: str, language: str
                 ) -> Callable[[AsyncSession], Awaitable[BookingResult | _Lost]]:
        """The booking's transaction, for a slot the check outside it found free."""
        start = early.slot.start

        async def attempt(session: AsyncSession) -> BookingResult | _Lost:
            checked = await self._recheck(session, early, start, kind)
            if not isinstance(checked, _Checked):
                return checked
            now = self.clock()
            code = _new_code()
            appointment_id = await self._add_rows(
                await session.connection(), number, language,
                _appointment_row(checked, kind, code, via, now))
            if kind is VisitKind.PHONE:
                session.add(new_consultation(appointment_id, checked.slot.start, now))
            return _booked(appointment_id, code, checked, number, kind)

        return attempt

    async def _recheck(self, session: AsyncSession, early: _Checked, start: dt.datetime,
                       kind: VisitKind) -> _Checked | Refused | _Lost:
        """Inside the write lock: the slot must still be free; the whole check runs again
        only if a clinic load changed the schedule since the check outside the lock."""
        rows = within(await session.connection())
        catalog, taken = await self.availability.booked(rows, early.doctor.id,
                                                        early.slot.interval)
        if catalog is None or catalog.revision != early.revision:
            return await self._check_slot(rows, early.doctor.id, start, kind)
        if taken:
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
            checked = await self._check_slot(within(await session.connection()),
                                             appointment.doctor_id,
                                             new_start, VisitKind(appointment.kind),
                                             moving=appointment.id)
            if not isinstance(checked, _Checked):
                return checked
            slot = checked.slot
            now = self.clock()
            if not await move_consultation(session, appointment.id, slot.start, now):
                return Refused(Refusal.PAST_CUTOFF, CALL_UNDER_WAY)
            session.add(AppointmentEvent(appointment_id=appointment.id, at=now,
                                         action="rescheduled", via=via,
                                         old_start=appointment.start_at, new_start=slot.start))
            appointment.start_at, appointment.end_at = slot.start, slot.end
            appointment.updated_at = now
            await session.flush()
            return Booked(await _view(session, appointment.id))

        lookup = await self._doctor_of(appointment_id)
        result = await self._write(attempt, lookup, new_start)
        return await self._alternatives(result) if isinstance(result, _Lost) else result

    async def cancel(self, appointment_id: int, owner_phone: str, via: str = "ivr"
                     ) -> CancelResult:
        """Cancel a booking of the caller's own, unless it starts within the cut-off or its
        consultation call is under way.

        The office's own cancel (`via="staff"`, the status page, for a booking left on a
        closed day) has no cut-off: the visit cannot happen, and the patient was called
        about it; only a consultation call under way refuses it.
        """
        number = phones.normalize(owner_phone)

        async def attempt(session: AsyncSession) -> CancelResult:
            appointment = await self._owned(session, appointment_id, number,
                                            cutoff=via != "staff")
            if isinstance(appointment, Refused):
                return appointment
            now = self.clock()
            if not await cancel_consultation(session, appointment.id, now):
                return Refused(Refusal.PAST_CUTOFF, CALL_UNDER_WAY)
            appointment.status, appointment.updated_at = AppointmentStatus.CANCELLED, now
            session.add(AppointmentEvent(appointment_id=appointment.id, at=now,
                                         action="cancelled", via=via,
                                         old_start=appointment.start_at))
            await session.flush()
            return Cancelled(await _view(session, appointment.id))

        return await self.db.retry_locked(lambda: self.db.write(attempt))

    async def _write(self, attempt: Callable[[AsyncSession], Awaitable[BookingResult | _Lost]],
                     doctor_id: int | None, start: dt.datetime) -> BookingResult | _Lost:
        """Run one booking transaction; a slot lost by check or by constraint is _Lost."""

        async def run() -> BookingResult | _Lost:
            for _ in range(10):
                try:
                    return await self.db.write(attempt)
                except IntegrityError as exc:
                    if doctor_id is not None and await self._slot_occupied(doctor_id, start):
                        return _Lost(doctor_id, start)
                    failure = exc
            raise failure

        return await self.db.retry_locked(run)

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
                                             HOLDS_ITS_SLOT))
        return found is not None

    async def _owned(self, session: AsyncSession, appointment_id: int, number: str, *,
                     cutoff: bool = True) -> Appointment | Refused:
        appointment = await session.scalar(
            select(Appointment).join(Patient).join(Doctor).where(
                Appointment.id == appointment_id, Patient.phone == number,
                Appointment.status == AppointmentStatus.BOOKED,
                Doctor.clinic_id == self.availability.clinic))
        if appointment is None:
            return Refused(Refusal.NOT_FOUND, "no booked appointment of this caller has that id")
        if cutoff and appointment.start_at - self.clock() < self.policy.change_cutoff:
            hours = self.policy.change_cutoff.total_seconds() / 3600
            return Refused(Refusal.PAST_CUTOFF,
                           f"changes close {hours:g} hours before the appointment")
        if await call_under_way(session, appointment.id):
            return Refused(Refusal.PAST_CUTOFF, CALL_UNDER_WAY)
        return appointment

    async def _check_slot(self, rows: Rows, doctor_id: int, start: dt.datetime,
                          kind: VisitKind, moving: int | None = None
                          ) -> _Checked | Refused | _Lost:
        schedule = await self._schedule(rows, doctor_id, lambda tz: (
            start.astimezone(tz).date(), start.astimezone(tz).date()), ignore=moving)
        if schedule is None:
            return Refused(Refusal.UNKNOWN_DOCTOR)
        day, now = schedule.first, self.clock()
        if start < now + self.policy.min_notice:
            return Refused(Refusal.TOO_SOON)
        if day > now.astimezone(schedule.tz).date() + dt.timedelta(days=self.policy.horizon_days):
            return Refused(Refusal.TOO_FAR)
        slot = next((s for s in open_slots(day, schedule.grid.rules, Taken.of(schedule.closures),
                                           not_before=start, tz=schedule.tz)
                     if s.start == start), None)
        if slot is None:
            return Refused(Refusal.NOT_A_SLOT)
        if kind not in slot.kinds:
            return Refused(Refusal.KIND_NOT_OFFERED)
        if any(slot.interval.overlaps(b) for b in schedule.booked):
            return _Lost(doctor_id, start)
        return _Checked(slot, schedule.grid.doctor, schedule.revision)

    async def _horizon(self, doctor_id: int) -> _Schedule | None:
        """Today and the horizon's days after it, in the clinic's time zone."""

        def span(tz: ZoneInfo) -> tuple[dt.date, dt.date]:
            today = self.clock().astimezone(tz).date()
            return today, today + dt.timedelta(days=self.policy.horizon_days)

        return await self._schedule(self.db.rows, doctor_id, span)

    async def _schedule(self, rows: Rows, doctor_id: int,
                        days: Callable[[ZoneInfo], tuple[dt.date, dt.date]],
                        ignore: int | None = None, known: Catalog | None = None
                        ) -> _Schedule | None:
        """A doctor's grid from the catalog and their bookings over `days` from the store;
        None for a doctor who is unknown or no longer active. `known` frames the days (the
        catalog last held, when not given)."""
        known = known or self.availability.held or await self.availability.catalog(rows)
        if known is None:
            return None
        first, last = days(known.tz)
        span = Interval(day_bounds(first, known.tz).start, day_bounds(last, known.tz).end)
        catalog, taken = await self.availability.booked(rows, doctor_id, span, ignore)
        if catalog is None:
            return None
        if catalog.tz != known.tz:  # a clinic load moved the zone: frame the days again
            return await self._schedule(rows, doctor_id, days, ignore, catalog)
        grid = catalog.grids.get(doctor_id)
        if grid is None:
            return None
        return _Schedule(grid, catalog, first, last,
                         grid.closures(first, last, catalog.tz), taken)

    def _open(self, schedule: _Schedule, day: dt.date) -> Iterator[Slot]:
        return open_slots(day, schedule.grid.rules, schedule.taken,
                          not_before=self.clock() + self.policy.min_notice, tz=schedule.tz)


class _Turns:
    """One booking of a slot at a time in this process: in a rush the callers behind the first
    wait for its answer and then see the slot taken, instead of all queueing to write it."""

    def __init__(self) -> None:
        self._locks: dict[tuple[int, dt.datetime], tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def of(self, slot: tuple[int, dt.datetime]) -> AsyncIterator[None]:
        """Hold the slot's turn; the lock is forgotten when nobody waits for it."""
        lock, users = self._locks.get(slot, (asyncio.Lock(), 0))
        self._locks[slot] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            users = self._locks[slot][1] - 1
            if users:
                self._locks[slot] = (lock, users)
            else:
                del self._locks[slot]


@dataclass(frozen=True)
class _Schedule:
    """One doctor's grid, closures and bookings over the days `first` to `last`."""

    grid: Grid
    catalog: Catalog
    first: dt.date
    last: dt.date
    closures: list[Interval]
    booked: list[Interval]

    @functools.cached_property
    def taken(self) -> Taken:
        """The closures and bookings merged, once for every day searched."""
        return Taken.of([*self.closures, *self.booked])

    @property
    def tz(self) -> ZoneInfo:
        """The clinic's time zone."""
        return self.catalog.tz

    @property
    def revision(self) -> int:
        """The clinic revision the grid was read under."""
        return self.catalog.revision

    @property
    def days(self) -> list[dt.date]:
        """Each local day from `first` to `last`."""
        return [self.first + dt.timedelta(days=n)
                for n in range((self.last - self.first).days + 1)]


def _appointment_row(checked: _Checked, kind: VisitKind, code: str, via: str,
                     now: dt.datetime) -> dict[str, Any]:
    """A new booking's appointment row, for a slot checked free."""
    return dict(doctor_id=checked.doctor.id, start_at=checked.slot.start,
                end_at=checked.slot.end, kind=kind.value, status=AppointmentStatus.BOOKED,
                code=code, created_via=via, created_at=now, updated_at=now)


def _booked(appointment_id: int, code: str, checked: _Checked, number: str,
            kind: VisitKind) -> Booked:
    """What a caller is told of the booking just written."""
    return Booked(AppointmentView(appointment_id, code, checked.doctor, number,
                                  checked.slot.start, checked.slot.end, kind,
                                  AppointmentStatus.BOOKED))


def _new_code() -> str:
    return str(100000 + secrets.randbelow(900000))


async def _add_in_one_statement(conn: AsyncConnection, number: str, language: str,
                                appointment: dict[str, Any]) -> int:
    """Write a booking's rows, its patient's (on their first booking), the appointment and
    its "booked" event, in one statement (PostgreSQL): each round trip held the transaction's
    pooled connection the longer, with the line's other callers waiting for one
    (bench.platform); returns the appointment's id."""
    return int((await conn.execute(_PG_BOOKING, dict(
        appointment, phone=number, language=language))).scalar_one())


async def _add_row_by_row(conn: AsyncConnection, number: str, language: str,
                          appointment: dict[str, Any]) -> int:
    """The same rows a statement each (SQLite, which has no data-modifying CTE; in its
    writer's thread a statement costs no round trip)."""
    now = appointment["created_at"]
    appointment_id = (await conn.execute(_NEW_APPOINTMENT, dict(
        appointment, patient_id=await _patient_id(conn, number, language, now)))).scalar_one()
    await conn.execute(_NEW_EVENT, dict(appointment_id=appointment_id, at=now, action="booked",
                                        via=appointment["created_via"],
                                        new_start=appointment["start_at"]))
    return int(appointment_id)


def _pg_booking(only_if: ColumnElement[bool] | None = None) -> Select[tuple[int]]:
    """The patient (one already there is kept as it is), the appointment and its event as one
    statement of data-modifying CTEs, with the same parameters as `_add_in_one_statement`'s
    appointment, the phone and the language; with `only_if`, nothing is written unless it
    holds (and no row comes back)."""
    def param(column: Column[object], name: str | None = None) -> BindParameter[object]:
        return bindparam(name or column.name, type_=column.type)

    given = select(param(_PATIENT.c.phone), param(_PATIENT.c.language),
                   param(_PATIENT.c.created_at))
    new = postgresql.insert(_PATIENT).from_select(
        ["phone", "language", "created_at"], given if only_if is None else given.where(only_if))
    # DO UPDATE of the phone to itself, not DO NOTHING: it returns the row that is there,
    # even one another booking added and committed while this one waited for it.
    patient = (new.on_conflict_do_update(index_elements=[_PATIENT.c.phone],
                                         set_={"phone": new.excluded.phone})
               .returning(_PATIENT.c.id).cte("booking_patient"))
    columns = ("doctor_id", "start_at", "end_at", "kind", "status", "code", "created_via",
               "created_at", "updated_at")
    booked = (insert(_APPOINTMENT)
              .from_select(["patient_id", *columns],
                           select(patient.c.id, *(param(_APPOINTMENT.c[c]) for c in columns)))
              .returning(_APPOINTMENT.c.id).cte("booked"))
    event = insert(_EVENT).from_select(
        ["appointment_id", "at", "action", "via", "new_start"],
        select(booked.c.id, param(_EVENT.c.at, "created_at"), literal("booked"),
               param(_EVENT.c.via, "created_via"), param(_EVENT.c.new_start, "start_at"))
    ).cte("booked_event")
    return select(booked.c.id).add_cte(event)


_PG_BOOKING = _pg_booking()
_PG_BOOKING_IF_FREE = _pg_booking(STILL_FREE)


async def _patient_id(conn: AsyncConnection, number: str, language: str, now: dt.datetime
                      ) -> int:
    """The caller's patient row, added on their first booking."""
    found = (await conn.execute(_PATIENT_OF, {"phone": number})).first()
    if found is not None:
        return int(found.id)
    return int((await conn.execute(_NEW_PATIENT, dict(
        phone=number, language=language, created_at=now))).scalar_one())


def _appointments() -> Select[tuple[Appointment, Doctor, Patient]]:
    return select(Appointment, Doctor, Patient).join(
        Doctor, Appointment.doctor_id == Doctor.id).join(
        Patient, Appointment.patient_id == Patient.id)


async def _view(session: AsyncSession, appointment_id: int) -> AppointmentView:
    row = (await session.execute(_appointments().where(Appointment.id == appointment_id))).one()
    return _appointment_view(*row)


def _appointment_view(appointment: Appointment, doctor: Doctor, patient: Patient
                      ) -> AppointmentView:
    return AppointmentView(appointment.id, appointment.code, doctor_view(doctor), patient.phone,
                           appointment.start_at, appointment.end_at, VisitKind(appointment.kind),
                           appointment.status)
