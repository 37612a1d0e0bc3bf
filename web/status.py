"""One snapshot of the phone system for the page, /api/status and /metrics alike.

The parts it reports on are handed in by the composition root (`Sources`); live state comes
from them (calls on this instance's line, the AMI link), everything else from the store.
Phone numbers are masked here, before anything leaves the process.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from clinic.phones import mask
from db.booking import BookingService
from db.clinic_sync import RecordedAbsence, recorded_absences
from db.engine import Database, utc_now
from db.figures import AbsenceRow, ConsultationRow, DayFigures, Figures, Heatmap
from db.practices import PracticeScope, practices
from db.schema import current_revision, head_revision
from db.surveys import SurveyAverage, SurveyStore
from db.unreadable import Unreadable, named
from web.problems import BadInput

log = logging.getLogger(__name__)
HEATMAP_DAYS = 28
"""The heatmap's default range: the last four weeks, today included."""
MAX_RANGE_DAYS = 366
DIALER_PART = "dialer"
"""The supervised part that rings consultations: /healthz fails when it is down while one is
due."""
PLANNER_PART = "planner"
"""The supervised part that plans the calls to patients (reminders, absence calls, surveys)
beside the dialer's rounds."""
FASTAGI_PART, PAGE_PART, AMI_PART = "fastagi", "status_page", "ami"
"""The supervised parts that keep nobat's doors open: the FastAGI and page listeners, the
AMI link."""
NEXT_AT_LEAST = dt.timedelta(hours=6)
""""Next" lists the rest of the day, and at least this far ahead (late at night: the morning)."""


@dataclass(frozen=True)
class PartView:
    """A long-running part of nobat serve (the dialer, the flow watcher, ...) as the
    supervisor sees it: running, restarting (since a failure), failing, or stopped."""

    name: str
    state: str
    since: dt.datetime
    last_error: str | None
    restarts: int

    @property
    def running(self) -> bool:
        """Doing its work now."""
        return self.state == "running"


class Versioned(Protocol):
    """A set of flows in service: its version is what the page shows."""

    @property
    def version(self) -> str: ...


class FlowsView(Protocol):
    """The flows as the page shows and reloads them (ivr's FlowStore)."""

    @property
    def loaded_at(self) -> float | None: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def left_out(self) -> tuple[Unreadable, ...]: ...
    def current(self) -> Versioned: ...
    async def reload(self, reason: str) -> bool: ...


class LinkView(Protocol):
    """The AMI link's state as the page shows it (bridge's AmiStatus)."""

    @property
    def state(self) -> enum.Enum: ...
    @property
    def last_error(self) -> str | None: ...


@dataclass(frozen=True)
class LiveCall:
    """An IVR call in progress on this instance."""

    caller: str
    """Masked."""
    step: str
    language: str
    elapsed: int
    practice: str = ""
    """The key of the practice it is in; "" on the shared number's menu (no practice yet)."""


@dataclass(frozen=True)
class PracticeName:
    """A practice as the page names its rows."""

    key: str
    name: str
    name_en: str


@dataclass
class Sources:
    """What the page reports on, as the composition root hands it in: plain views and
    callables, never the parts' own classes; any part may be missing (no AMI secret: no
    dialer)."""

    database: Database
    tz: ZoneInfo
    booking: Callable[[str], BookingService | None]
    """A practice's booking service by key, with the rules as configured (the page's staff
    cancel goes through them); None for a practice the line does not serve (yet)."""
    flows: FlowsView | None = None
    live_calls: Callable[[dt.datetime], list[LiveCall]] = lambda now: []
    """The IVR calls in progress on this instance, oldest first, callers masked."""
    fastagi: Callable[[], str] | None = None
    """The FastAGI door: "listening", "stopped", or "no_secret" (every call refused)."""
    ami: Callable[[], LinkView] | None = None
    clock: Callable[[], dt.datetime] = utc_now
    parts: Callable[[], list[PartView]] = list
    """The supervised parts' states (none when the page runs on its own)."""

    def zone(self, practice: PracticeScope | None) -> ZoneInfo:
        """The zone a reader's day and clock are in: a practice's staff their practice's, the
        platform admin the line's (its first practice's)."""
        return self.tz if practice is None else practice.tz


@dataclass(frozen=True)
class Health:
    """Is each part working, and if not, why."""

    database: str
    schema: str | None
    fastagi: str
    ami: str
    ami_error: str | None
    flows_version: str | None
    flows_loaded_at: str | None
    flows_error: str | None
    practices_off: tuple[Unreadable, ...] = ()
    """The practices off the line, their rows in the store unreadable (docs/platform.md)."""
    parts: tuple[PartView, ...] = ()
    due_unserved: int = 0
    """Consultations due now while no running dialer with a live AMI link can ring them."""

    @property
    def flows_ok(self) -> bool:
        """No flow edit refused and no practice off the line: /healthz's "flows"."""
        return self.flows_error is None and not self.practices_off

    @property
    def practices_off_named(self) -> str:
        """The practices off the line, each with why, as the page shows them."""
        return named(self.practices_off)

    @property
    def ok(self) -> bool:
        """All parts that exist work (a missing AMI secret is a choice, not a fault)."""
        return (self.database == "ok" and self.fastagi in ("listening", "off")
                and self.ami in ("connected", "off") and self.flows_ok
                and all(part.running for part in self.parts))

    @property
    def serving(self) -> bool:
        """What /healthz answers 200 for: the store works and nothing due waits on a
        dialer that is down."""
        return self.database == "ok" and self.due_unserved == 0


@dataclass(frozen=True)
class ConsultationView:
    """A consultation as the page shows it: masked number, seconds counted for the reader."""

    id: int
    state: str
    doctor: str
    doctor_en: str
    patient: str
    due_at: dt.datetime
    starts_at: dt.datetime
    booked_minutes: int
    attempt: int
    elapsed: int | None
    """Seconds since it started ringing (or since the bridge when bridged)."""
    countdown: int
    """Seconds until it is due (negative: overdue, e.g. waiting for the cap)."""
    practice: str


@dataclass(frozen=True)
class AbsenceView:
    """A booking on a closed day as the page lists it, its patient's number masked."""

    appointment_id: int
    doctor: str
    doctor_en: str
    patient: str
    starts_at: dt.datetime
    call_state: str
    outcome: str | None
    practice: str


@dataclass(frozen=True)
class Status:
    """Everything the page shows, at one instant."""

    now: dt.datetime
    today: dt.date
    health: Health
    live_calls: list[LiveCall]
    live_consultations: list[ConsultationView]
    upcoming: list[ConsultationView]
    day: DayFigures
    heatmap: Heatmap
    minutes_by_day: list[tuple[dt.date, float]] = field(default_factory=list)
    patient_calls: list[tuple[str, str, int]] = field(default_factory=list)
    """Today's reminder, absence and survey calls: (purpose, outcome, count)."""
    absences: list[AbsenceView] = field(default_factory=list)
    survey_doctors: list[SurveyAverage] = field(default_factory=list)
    survey_weeks: list[SurveyAverage] = field(default_factory=list)
    recorded_absences: list[RecordedAbsence] = field(default_factory=list)
    """Closures recorded on the page, still to come or going on (they can be lifted)."""
    practices: dict[str, PracticeName] = field(default_factory=dict)
    """The practices the reader may see, by key: every one for the platform admin."""

    def as_json(self) -> dict[str, Any]:
        """The same figures for /api/status, dates as ISO text."""
        return {
            "now": self.now.isoformat(), "today": self.today.isoformat(),
            "health": {**vars(self.health), "ok": self.health.ok,
                       "parts": [_part_json(part) for part in self.health.parts],
                       "practices_off": [vars(off) for off in self.health.practices_off]},
            "live_calls": [vars(call) for call in self.live_calls],
            "live_consultations": [_view_json(v) for v in self.live_consultations],
            "upcoming": [_view_json(v) for v in self.upcoming],
            "today_figures": {**vars(self.day), "failed": [
                {"cause": cause, "count": n} for cause, n in self.day.failed]},
            "heatmap": {"first": self.heatmap.first.isoformat(),
                        "last": self.heatmap.last.isoformat(),
                        "weekdays_from": "saturday", "counts": self.heatmap.counts},
            "consultation_minutes": [{"day": day.isoformat(), "minutes": minutes}
                                     for day, minutes in self.minutes_by_day],
            "patient_calls": [{"purpose": purpose, "outcome": outcome, "count": n}
                              for purpose, outcome, n in self.patient_calls],
            "absences": [{**vars(a), "starts_at": a.starts_at.isoformat()}
                         for a in self.absences],
            "survey": {"by_doctor": [vars(a) for a in self.survey_doctors],
                       "by_week": [vars(a) for a in self.survey_weeks]},
            "recorded_absences": [{**vars(a), "first_day": a.first_day.isoformat(),
                                   "last_day": a.last_day.isoformat()}
                                  for a in self.recorded_absences],
            "practices": [vars(p) for p in self.practices.values()],
        }


def _part_json(part: PartView) -> dict[str, Any]:
    return {**vars(part), "since": part.since.isoformat()}


def _view_json(view: ConsultationView) -> dict[str, Any]:
    return {**vars(view), "due_at": view.due_at.isoformat(),
            "starts_at": view.starts_at.isoformat()}


def heatmap_range(today: dt.date, first: dt.date | None, last: dt.date | None
                  ) -> tuple[dt.date, dt.date]:
    """The range asked for, or the last four weeks; refuses (BadInput) a reversed or huge
    one."""
    last = last or today
    first = first or last - dt.timedelta(days=HEATMAP_DAYS - 1)
    if first > last:
        raise BadInput("range_reversed")
    if (last - first).days >= MAX_RANGE_DAYS:
        raise BadInput("range_too_long")
    return first, last


@dataclass(frozen=True)
class DatabaseHealth:
    """Whether the store answers, and at which schema."""

    database: str
    schema: str | None

    @property
    def ok(self) -> bool:
        """Reachable and migrated to what this code expects."""
        return self.database == "ok"


async def database_health(database: Database) -> DatabaseHealth:
    """The store's state for /healthz and the page; a store that does not answer is reported
    (and logged), not raised."""
    try:
        schema = await current_revision(database)
    except Exception as exc:  # any driver error means the same to the reader: unreachable
        log.warning("health check: database unreachable: %s", type(exc).__name__)
        return DatabaseHealth("unreachable", None)
    return DatabaseHealth("ok" if schema == head_revision() else "schema behind", schema)


async def health(sources: Sources) -> Health:
    """Each part's state, and whether consultations due now wait on a dialer that is down."""
    store = await database_health(sources.database)
    parts = tuple(sources.parts())
    dialer = next((part for part in parts if part.name == DIALER_PART), None)
    link = sources.ami() if sources.ami is not None else None
    ringing = (dialer is not None and dialer.running and link is not None
               and link.state.value == "connected")
    due = 0
    if dialer is not None and not ringing and store.ok:
        due = await Figures(sources.database, sources.tz).due_consultations(sources.clock())
    fastagi = "off" if sources.fastagi is None else sources.fastagi()
    flows = sources.flows
    current = flows.current() if flows is not None else None
    return Health(
        database=store.database, schema=store.schema, fastagi=fastagi,
        ami="off" if link is None else link.state.value,
        ami_error=None if link is None else link.last_error,
        flows_version=None if current is None else current.version,
        flows_loaded_at=None if flows is None else flows.loaded_at,
        flows_error=None if flows is None else flows.last_error,
        practices_off=() if flows is None else flows.left_out, parts=parts,
        due_unserved=due)


def view(row: ConsultationRow, now: dt.datetime) -> ConsultationView:
    """A store row as the page shows it."""
    since = row.bridged_at or row.attempt_started
    return ConsultationView(
        id=row.id, state=row.state, doctor=row.doctor, doctor_en=row.doctor_en,
        patient=mask(row.patient_phone), due_at=row.due_at, starts_at=row.starts_at,
        booked_minutes=int((row.ends_at - row.starts_at).total_seconds() // 60),
        attempt=row.attempt,
        elapsed=None if since is None else int((now - since).total_seconds()),
        countdown=int((row.due_at - now).total_seconds()), practice=row.practice)


async def snapshot(sources: Sources, first: dt.date | None = None,
                   last: dt.date | None = None, staff: bool = True,
                   practice: PracticeScope | None = None) -> Status:
    """Gather the whole status of one practice, or (None) of every practice; `first`/`last`
    choose the heatmap's range. Without `staff` (a /metrics scrape, every few seconds) the
    lists only people read are left empty: bookings on closed days, recorded absences, eight
    weeks of survey averages, and today's patient calls (/metrics reads them by practice).
    Health is the platform's, whoever reads it, but for the practices off the line: a
    practice's staff see only whether theirs is."""
    now, tz = sources.clock(), sources.zone(practice)
    today = now.astimezone(tz).date()
    first, last = heatmap_range(today, first, last)
    clinic = None if practice is None else practice.id
    figures = Figures(sources.database, tz, clinic)
    end_of_day = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), tz)
    until = max(end_of_day, now + NEXT_AT_LEAST)
    platform = await health(sources)
    if practice is not None:
        platform = dataclasses.replace(platform, practices_off=tuple(
            off for off in platform.practices_off if off.practice == practice.key))
    status = Status(
        now=now, today=today, health=platform,
        live_calls=[call for call in sources.live_calls(now)
                    if practice is None or call.practice == practice.key],
        live_consultations=[view(r, now) for r in await figures.live_consultations()],
        upcoming=[view(r, now) for r in await figures.upcoming(now, until)],
        day=await figures.day(today), heatmap=await figures.heatmap(first, last),
        minutes_by_day=await figures.consultation_minutes(first, last),
        patient_calls=await figures.patient_calls(today) if staff else [],
        practices={p.key: PracticeName(p.key, p.name, p.name_en)
                   for p in await practices(sources.database) if clinic in (None, p.id)})
    if not staff:
        return status
    doctors, weeks = await SurveyStore(sources.database, sources.clock).averages(
        tz, clinic=clinic)
    return dataclasses.replace(
        status, absences=[absence_view(row) for row in await figures.absences(now)],
        survey_doctors=doctors, survey_weeks=weeks,
        recorded_absences=await recorded_absences(sources.database, today, clinic))


def absence_view(row: AbsenceRow) -> AbsenceView:
    """A store row as the page shows it."""
    return AbsenceView(row.appointment_id, row.doctor, row.doctor_en, mask(row.patient_phone),
                       row.starts_at, row.call_state, row.outcome, row.practice)
