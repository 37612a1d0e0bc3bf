"""What decides free slots, kept in memory per clinic revision, so that a menu reads only bookings.

The clinic's words, its doctors, their weekly hours and closed days change only with a clinic
load or an absence entered on the page, and each of those bumps the clinic's revision in the
store. Every read checks the revision (one indexed row) and the bookings of the span it asks
about with one Core query, shared by every caller of any practice asking at that moment
(db/batches.py); the rest comes from memory, rebuilt when any instance changed it. The
database, never this cache, decides whether a booking is written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Row,
    ScalarSelect,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
)

from clinic.calendar import Weekday
from clinic.office import OfficeWeek, office_hours_of_text
from clinic.schedule import HoursRule, Interval, VisitKind, day_bounds
from db.batches import Batches
from db.engine import one_line
from db.models import HOLDS_ITS_SLOT, Appointment, Clinic, Closure, Doctor, WeeklyHours
from db.reads import Rows
from db.unreadable import UNREADABLE, RowUnreadable


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
    office: str | None = None
    """The practice's own office; None: the line's ([ivr] office in config.toml)."""
    office_hours: OfficeWeek | None = None
    """When the practice's office answers; None: the line's ([ivr] office_hours)."""


@dataclass(frozen=True)
class Grid:
    """One active doctor's week and closed days, as of the catalog's revision."""

    doctor: DoctorView
    rules: tuple[HoursRule, ...]
    closed: tuple[tuple[dt.date, dt.date], ...]

    def closures(self, first: dt.date, last: dt.date, tz: ZoneInfo) -> list[Interval]:
        """The closed days that touch `first`..`last`, as spans of time."""
        return [Interval(day_bounds(a, tz).start, day_bounds(b, tz).end)
                for a, b in self.closed if a <= last and b >= first]


@dataclass(frozen=True)
class Catalog:
    """The clinic and every active doctor's grid under one revision of the store."""

    revision: int
    profile: ClinicProfile
    clinic_closed: tuple[tuple[dt.date, dt.date], ...]
    grids: dict[int, Grid]

    @property
    def tz(self) -> ZoneInfo:
        """The clinic's time zone."""
        return self.profile.tz


def practice_id(practice: str | None) -> ScalarSelect[int]:
    """The id of the practice keyed `practice`; of the first clinic loaded when None (a
    deployment of one practice, whatever its key)."""
    if practice is None:
        return select(func.min(Clinic.id)).scalar_subquery()
    return select(Clinic.id).where(Clinic.key == practice).scalar_subquery()


LONGEST_SLOT = dt.timedelta(minutes=240)
"""A booking ends at most this long after it starts (clinic/schedule.py's bound on slots), so
the index on (doctor, start) bounds the search from both sides."""
_WITHIN = and_(HOLDS_ITS_SLOT,
               Appointment.start_at > bindparam("earliest"),
               Appointment.start_at < bindparam("until"),
               Appointment.end_at > bindparam("since"),
               Appointment.id != bindparam("ignore"))
"""A live booking overlapping the span of `span_params` (but `ignore`'s)."""
_SPAN = and_(Appointment.doctor_id == bindparam("doctor"), _WITHIN)
_REVISIONS = (select(Clinic.key, Clinic.id, Clinic.revision)
              .where(or_(Clinic.key.in_(bindparam("keys", expanding=True)),
                         Clinic.id == practice_id(None))))
"""The revisions of the practices keyed `keys`, and of the first one loaded (practice None)."""
_BOOKED = (select(Doctor.id.label("doctor"), Clinic.key, Clinic.id, Clinic.revision,
                  Appointment.start_at, Appointment.end_at)
           .select_from(Doctor.__table__.join(Clinic.__table__, Clinic.id == Doctor.clinic_id)
                        .outerjoin(Appointment.__table__,
                                   and_(Appointment.doctor_id == Doctor.id, _WITHIN)))
           .where(Doctor.id.in_(bindparam("doctors", expanding=True)))
           .order_by(Appointment.start_at))
"""Each of `doctors`' practice revision and live bookings in one span: many callers' reads
of one moment (db/batches.py)."""


STILL_FREE: ColumnElement[bool] = and_(
    exists(select(Clinic.id).join(Doctor, Doctor.clinic_id == Clinic.id)
           .where(Doctor.id == bindparam("doctor"), Clinic.revision == bindparam("revision"))),
    ~exists(select(Appointment.id).where(_SPAN)))
"""Inside a statement: the doctor's practice is still at `revision` and nothing holds the
span of `span_params`, so a slot checked free under that revision may be written."""


def span_params(doctor_id: int, span: Interval, ignore: int | None = None) -> dict[str, Any]:
    """The parameters of the bookings of a doctor overlapping `span` (but `ignore`'s)."""
    return {"doctor": doctor_id, "since": span.start, "until": span.end,
            "earliest": span.start - LONGEST_SLOT, "ignore": -1 if ignore is None else ignore}


class Availability:
    """One practice's catalog in this process, checked against the store's revision on every
    read."""

    def __init__(self, shared: Rows, practice: str | None = None,
                 batches: Batches | None = None) -> None:
        self.shared = shared
        """The store's own reads, outside any transaction (db/reads.py)."""
        self.practice = practice
        self.batches = batches or Batches()
        """Reads of this moment, with other practices' of the same store if it is shared."""
        self.clinic = practice_id(practice)
        """Selects this practice's clinic id inside the statements that read it."""
        self._revision_and_booked = (
            select(Clinic.id, Clinic.revision, Appointment.start_at, Appointment.end_at)
            .select_from(Clinic.__table__.outerjoin(Appointment.__table__, _SPAN))
            .where(Clinic.id == self.clinic).order_by(Appointment.start_at))
        self._held: tuple[int, Catalog] | None = None
        """The clinic id and its catalog as last built, replaced in one assignment: the
        writer's thread reads it too (db/write_groups.py)."""
        self._building = asyncio.Lock()

    async def catalog(self, rows: Rows) -> Catalog | None:
        """The catalog as the store has it now; None before any clinic file was loaded."""
        if rows is self.shared:  # a practice's callers do not wait on each other's: that
            # moved them in step, and one practice's midnight rush took a third longer
            found = await self.batches.get("revisions", self.practice,
                                           partial(_revisions, rows), joins=False)
        else:
            found = (await _revisions(rows, frozenset((self.practice,)))).get(self.practice)
        return None if found is None else await self._at(rows, found.id, found.revision)

    async def booked(self, rows: Rows, doctor_id: int, span: Interval,
                     ignore: int | None = None) -> tuple[Catalog | None, list[Interval]]:
        """The catalog and a doctor's live bookings overlapping `span`, in one statement:
        through the shared reads, with every other doctor's asked in the same span at that
        moment (db/batches.py)."""
        params = span_params(doctor_id, span, ignore)
        found: Sequence[Row[Any]] | None = None
        if rows is self.shared:
            found = await self.batches.get(("booked", span, params["ignore"]), doctor_id,
                                           partial(self._booked, params))
        if not found or not self._mine(found[0]):
            found = await rows(self._revision_and_booked, params)  # unknown: the practice's
        if not found:
            return None, []
        catalog = await self._at(rows, found[0].id, found[0].revision)
        return catalog, [Interval(r.start_at, r.end_at) for r in found if r.start_at is not None]

    def _mine(self, row: Row[Any]) -> bool:
        """Whether a batch's row is of this practice's doctor: by its key, or (the first
        practice loaded, keyless) by the clinic whose catalog is held."""
        if self.practice is not None:
            return bool(row.key == self.practice)
        return self._held is not None and row.id == self._held[0]

    async def _booked(self, params: dict[str, Any], doctors: frozenset[int]
                      ) -> dict[int, list[Row[Any]]]:
        by_doctor: dict[int, list[Row[Any]]] = {}
        for row in await self.shared(_BOOKED, {**params, "doctors": sorted(doctors)}):
            by_doctor.setdefault(row.doctor, []).append(row)
        return by_doctor

    async def _at(self, rows: Rows, clinic_id: int, revision: int) -> Catalog:
        held = _fresh(self._held, clinic_id, revision)
        if held is not None:
            return held
        if rows is not self.shared:  # a write's own reads, in the writer's thread: the
            return await _build(rows, clinic_id)  # catalog is its own, the loop's untouched
        async with self._building:  # callers of one rebuild wait for it, not repeat it
            held = _fresh(self._held, clinic_id, revision)
            if held is None:
                held = await _build(rows, clinic_id)
                self._held = (clinic_id, held)
        return held

    def hold(self, clinic_id: int, catalog: Catalog) -> None:
        """Keep a catalog read with other practices' (`catalogs`), unless a newer one is held."""
        if _fresh(self._held, clinic_id, catalog.revision) is None:
            self._held = (clinic_id, catalog)

    @property
    def held(self) -> Catalog | None:
        """The catalog as last read, if any: its time zone frames the next read's days."""
        return None if self._held is None else self._held[1]


async def _revisions(rows: Rows, practices: frozenset[str | None]
                     ) -> dict[str | None, Row[Any]]:
    """Each of `practices`' clinic id and revision, by its key (None: the first loaded)."""
    found = await rows(_REVISIONS, {"keys": sorted(p for p in practices if p)})
    by_key: dict[str | None, Row[Any]] = {r.key: r for r in found}
    if found:
        by_key[None] = min(found, key=lambda r: r.id)
    return by_key


def _fresh(held: tuple[int, Catalog] | None, clinic_id: int, revision: int) -> Catalog | None:
    """The catalog held, if it is of `clinic_id` at `revision` or newer."""
    if held is None or held[0] != clinic_id or held[1].revision < revision:
        return None
    return held[1]


@dataclass(frozen=True)
class Catalogs:
    """Practices' catalogs read together, and those of them whose rows cannot be read."""

    read: dict[int, Catalog]
    """Each practice's catalog by clinic id, as of its revision."""
    unreadable: dict[int, str]
    """Why a practice's catalog could not be built (its row edited by hand), by clinic id."""


async def catalogs(rows: Rows, clinic_ids: Sequence[int]) -> Catalogs:
    """Many practices' catalogs in one pass of five statements, not five each (the line reads
    every practice's at its start); one that a load changed meanwhile is left out, to be read
    alone when asked (each statement may see the store at a newer moment)."""
    read, unreadable = await _read(rows, clinic_ids)
    now = await rows(select(Clinic.id, Clinic.revision).where(Clinic.id.in_(clinic_ids)), None)
    return Catalogs({r.id: read[r.id] for r in now
                     if r.id in read and read[r.id].revision == r.revision}, unreadable)


async def _build(rows: Rows, clinic_id: int) -> Catalog:
    """Read the clinic, its doctors, their hours and the closures; again if a load changed the
    revision meanwhile."""
    while True:
        found = await catalogs(rows, [clinic_id])
        if clinic_id in found.unreadable:
            raise RowUnreadable(found.unreadable[clinic_id])
        if (built := found.read.get(clinic_id)) is not None:
            return built


async def _read(rows: Rows, clinic_ids: Sequence[int]
                ) -> tuple[dict[int, Catalog], dict[int, str]]:
    clinics = await rows(select(Clinic).where(Clinic.id.in_(clinic_ids)), None)
    doctors: dict[int, list[Row[Any]]] = {c.id: [] for c in clinics}
    for d in await rows(select(Doctor).where(Doctor.clinic_id.in_(clinic_ids),
                                             Doctor.active.is_(True)).order_by(Doctor.id), None):
        doctors[d.clinic_id].append(d)
    hours: dict[int, list[Row[Any]]] = {}
    for row in await rows(select(WeeklyHours).join(Doctor).where(
            Doctor.clinic_id.in_(clinic_ids), Doctor.active.is_(True)), None):
        hours.setdefault(row.doctor_id, []).append(row)
    closed: dict[tuple[int, int | None], list[tuple[dt.date, dt.date]]] = {}
    for row in await rows(select(Closure.clinic_id, Closure.doctor_id, Closure.first_day,
                                 Closure.last_day).where(Closure.clinic_id.in_(clinic_ids)),
                          None):
        closed.setdefault((row.clinic_id, row.doctor_id), []).append(
            (row.first_day, row.last_day))
    read, unreadable = {}, {}
    for clinic in clinics:
        try:
            read[clinic.id] = _catalog(clinic, doctors[clinic.id], hours, closed)
        except UNREADABLE as exc:  # one practice's row edited by hand fails it alone
            unreadable[clinic.id] = one_line(exc)
    return read, unreadable


def _catalog(clinic: Row[Any], doctors: list[Row[Any]], hours: dict[int, list[Row[Any]]],
             closed: dict[tuple[int, int | None], list[tuple[dt.date, dt.date]]]) -> Catalog:
    everyone = tuple(closed.get((clinic.id, None), ()))
    views = tuple(doctor_view(d) for d in doctors)
    profile = ClinicProfile(
        clinic.name, clinic.name_en, clinic.phone, clinic.address, clinic.address_en,
        ZoneInfo(clinic.timezone), views, clinic.office,
        None if clinic.office_hours is None else office_hours_of_text(clinic.office_hours))
    return Catalog(clinic.revision, profile, everyone, {
        d.id: Grid(d, tuple(rule_of(r) for r in hours.get(d.id, ())),
                   everyone + tuple(closed.get((clinic.id, d.id), ())))
        for d in views})


def doctor_view(row: Doctor | Row[Any]) -> DoctorView:
    """A stored doctor as menus see them."""
    return DoctorView(row.id, row.key, row.name, row.name_en, row.specialty,
                      tuple(row.languages.split(",")))


def rule_of(row: WeeklyHours) -> HoursRule:
    """Turn a stored block back into the domain's rule."""
    return HoursRule(Weekday(row.weekday), row.start_minute, row.end_minute, row.slot_minutes,
                     frozenset(VisitKind(k) for k in row.kinds.split(",")))
