"""What the status page and /metrics count, read from the store: it is the truth for every
nobat instance sharing it, so the figures agree whichever instance serves the page."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import astuple, dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, func, select, true

from clinic.calendar import Weekday
from clinic.schedule import day_bounds
from db.engine import Database
from db.leases import claimable
from db.lifecycles import LIVE_CONSULTATION, WAITING, ConsultationState, PatientCallState
from db.models import (
    Appointment,
    AppointmentEvent,
    CallAttempt,
    Clinic,
    Consultation,
    Doctor,
    InboundCall,
    Patient,
    PatientCall,
)
from db.patient_calls import Purpose, covered_bookings, subject_of
from db.records import columns_of, record_of


@dataclass(frozen=True)
class DayFigures:
    """One clinic day's totals, from its local midnight to the next."""

    calls: int
    bookings: int
    reschedules: int
    cancellations: int
    consultation_minutes: float
    completed_consultations: int
    resumed_attempts: int
    """Consultation attempts begun that day whose events nobat missed (a lost AMI link, a
    takeover) and that went on from Asterisk's channels."""
    failed: list[tuple[str, int]]
    """Consultations given up that day, counted by cause, most frequent first."""


@dataclass(frozen=True)
class ConsultationRow:
    """A consultation as the page lists it (the patient's number is masked by the page)."""

    id: int
    state: str
    doctor: str
    doctor_en: str
    patient_phone: str
    due_at: dt.datetime
    starts_at: dt.datetime
    ends_at: dt.datetime
    attempt: int
    attempt_started: dt.datetime | None
    bridged_at: dt.datetime | None
    practice: str
    """Its practice's key."""


@dataclass(frozen=True)
class AbsenceRow:
    """A booking a closure covers, and what its patient said when called (the staff decide
    the rest)."""

    appointment_id: int
    doctor: str
    doctor_en: str
    patient_phone: str
    starts_at: dt.datetime
    call_state: str
    outcome: str | None
    practice: str
    """Its practice's key."""


@dataclass(frozen=True)
class Heatmap:
    """Inbound calls by weekday (Saturday first) and local hour over [first, last]."""

    first: dt.date
    last: dt.date
    counts: list[list[int]]

    @property
    def peak(self) -> int:
        """The busiest cell, which the page's colours scale to."""
        return max((n for row in self.counts for n in row), default=0)


class Figures:
    """Read-only questions the status page asks, about one practice (by clinic id) or, with
    none named, every practice in the store; one short read transaction each."""

    def __init__(self, database: Database, tz: ZoneInfo, clinic: int | None = None) -> None:
        self.db = database
        self.tz = tz
        self.clinic = clinic

    def _doctors(self) -> ColumnElement[bool]:
        """Rows joined to Doctor belong to the practice asked about."""
        return true() if self.clinic is None else Doctor.clinic_id == self.clinic

    def _bookings(self, appointment_id: ColumnElement[int]) -> ColumnElement[bool]:
        """`appointment_id` is a booking with one of the practice's doctors."""
        if self.clinic is None:
            return true()
        return appointment_id.in_(select(Appointment.id).join(
            Doctor, Appointment.doctor_id == Doctor.id).where(self._doctors()))

    def _attempts(self) -> ColumnElement[bool]:
        """A consultation attempt about one of the practice's bookings."""
        if self.clinic is None:
            return true()
        return CallAttempt.consultation_id.in_(select(Consultation.id).where(
            self._bookings(Consultation.appointment_id)))

    def _calls(self) -> ColumnElement[bool]:
        """An inbound call that reached the practice."""
        return true() if self.clinic is None else InboundCall.clinic_id == self.clinic

    async def day(self, day: dt.date) -> DayFigures:
        """Calls, booking changes and consultations of one local day."""
        start, end = astuple(day_bounds(day, self.tz))
        async with self.db.reading() as session:
            calls = await session.scalar(select(func.count()).select_from(InboundCall).where(
                InboundCall.started_at >= start, InboundCall.started_at < end,
                self._calls())) or 0
            actions = dict((await session.execute(
                select(AppointmentEvent.action, func.count())
                .where(AppointmentEvent.at >= start, AppointmentEvent.at < end,
                       self._bookings(AppointmentEvent.appointment_id))
                .group_by(AppointmentEvent.action))).all())
            talked, completed = (await session.execute(
                select(func.coalesce(func.sum(CallAttempt.talk_seconds), 0),
                       func.count(CallAttempt.id))
                .where(CallAttempt.outcome == "completed", CallAttempt.ended_at >= start,
                       CallAttempt.ended_at < end, self._attempts()))).one()
            resumed = await session.scalar(
                select(func.count(CallAttempt.id))
                .where(CallAttempt.resumes > 0, CallAttempt.started_at >= start,
                       CallAttempt.started_at < end, self._attempts())) or 0
            failed = (await session.execute(
                select(Consultation.cause, func.count())
                .where(Consultation.state == ConsultationState.MISSED,
                       Consultation.updated_at >= start, Consultation.updated_at < end,
                       self._bookings(Consultation.appointment_id))
                .group_by(Consultation.cause))).all()
        return DayFigures(
            calls=calls, bookings=actions.get("booked", 0),
            reschedules=actions.get("rescheduled", 0),
            cancellations=actions.get("cancelled", 0),
            consultation_minutes=round(int(talked) / 60, 1), completed_consultations=completed,
            resumed_attempts=resumed,
            failed=sorted(((cause or "unknown", n) for cause, n in failed),
                          key=lambda item: (-item[1], item[0])))

    async def live_consultations(self) -> list[ConsultationRow]:
        """Consultations ringing or bridged now, on any instance."""
        return await self._consultations(Consultation.state.in_(LIVE_CONSULTATION))

    async def upcoming(self, now: dt.datetime, until: dt.datetime) -> list[ConsultationRow]:
        """Consultations still to be dialled before `until`, soonest first (a retry included)."""
        return await self._consultations(Consultation.state.in_(WAITING),
                                         Consultation.due_at < until,
                                         Consultation.due_at >= now - dt.timedelta(hours=1))

    async def _consultations(self, *where: object) -> list[ConsultationRow]:
        attempt = CallAttempt
        query = (select(*columns_of(
                    ConsultationRow, id=Consultation.id, state=Consultation.state,
                    doctor=Doctor.name, doctor_en=Doctor.name_en, patient_phone=Patient.phone,
                    due_at=Consultation.due_at, starts_at=Appointment.start_at,
                    ends_at=Appointment.end_at, attempt=Consultation.attempts,
                    attempt_started=attempt.started_at, bridged_at=attempt.bridged_at,
                    practice=Clinic.key))
                 .join(Appointment, Consultation.appointment_id == Appointment.id)
                 .join(Doctor, Appointment.doctor_id == Doctor.id)
                 .join(Clinic, Doctor.clinic_id == Clinic.id)
                 .join(Patient, Appointment.patient_id == Patient.id)
                 .outerjoin(attempt, (attempt.consultation_id == Consultation.id)
                            & (attempt.number == Consultation.attempts))
                 .where(self._doctors(), *where)  # type: ignore[arg-type]
                 .order_by(Consultation.due_at, Consultation.id))
        async with self.db.reading() as session:
            rows = (await session.execute(query)).all()
        return [record_of(ConsultationRow, row) for row in rows]

    async def heatmap(self, first: dt.date, last: dt.date) -> Heatmap:
        """Count inbound calls per local weekday and hour (bucketed here, the same on every
        backend and in the clinic's time zone)."""
        start, end = day_bounds(first, self.tz).start, day_bounds(last, self.tz).end
        counts = [[0] * 24 for _ in Weekday]
        async with self.db.reading() as session:
            stream = await session.stream_scalars(select(InboundCall.started_at).where(
                InboundCall.started_at >= start, InboundCall.started_at < end, self._calls()))
            async for started in stream:
                local = started.astimezone(self.tz)
                counts[Weekday.of(local.date())][local.hour] += 1
        return Heatmap(first, last, counts)

    async def consultation_minutes(self, first: dt.date, last: dt.date
                                   ) -> list[tuple[dt.date, float]]:
        """Minutes talked in consultations per local day over [first, last], zeros included."""
        start, end = day_bounds(first, self.tz).start, day_bounds(last, self.tz).end
        seconds: Counter[dt.date] = Counter()
        async with self.db.reading() as session:
            rows = (await session.execute(
                select(CallAttempt.ended_at, CallAttempt.talk_seconds)
                .where(CallAttempt.outcome == "completed", CallAttempt.ended_at >= start,
                       CallAttempt.ended_at < end, self._attempts()))).all()
        for ended, talked in rows:
            if ended is not None:
                seconds[ended.astimezone(self.tz).date()] += talked or 0
        days = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
        return [(day, round(seconds[day] / 60, 1)) for day in days]

    async def due_consultations(self, now: dt.datetime) -> int:
        """Consultations due now and not yet taken by a dialer: /healthz's "who rings them?"."""
        async with self.db.reading() as session:
            return await session.scalar(select(func.count()).select_from(Consultation)
                                        .where(claimable(Consultation, now))) or 0

    async def consultation_states(self) -> dict[tuple[str, str], int]:
        """How many consultations each practice (by key) has in each state, for /metrics."""
        async with self.db.reading() as session:
            rows = (await session.execute(
                select(Clinic.key, Consultation.state, func.count())
                .join(Appointment, Consultation.appointment_id == Appointment.id)
                .join(Doctor, Appointment.doctor_id == Doctor.id)
                .join(Clinic, Doctor.clinic_id == Clinic.id)
                .where(self._doctors())
                .group_by(Clinic.key, Consultation.state))).all()
        return {(practice, state): n for practice, state, n in rows}

    async def patient_calls(self, day: dt.date) -> list[tuple[str, str, int]]:
        """Reminder, absence and survey calls that ended that day, by purpose and what came
        of them (the patient's choice, or why nobody was reached)."""
        summed: Counter[tuple[str, str]] = Counter()
        for (_, purpose, outcome), n in (await self.patient_calls_by_practice(day)).items():
            summed[purpose, outcome] += n
        return [(purpose, outcome, n) for (purpose, outcome), n in sorted(summed.items())]

    async def patient_calls_by_practice(self, day: dt.date) -> dict[tuple[str, str, str], int]:
        """The same by practice (its key), purpose and what came of them, for /metrics."""
        start, end = astuple(day_bounds(day, self.tz))
        result = func.coalesce(PatientCall.outcome, PatientCall.state)
        async with self.db.reading() as session:
            rows = (await session.execute(
                select(Clinic.key, PatientCall.purpose, result, func.count())
                .join(Appointment, PatientCall.appointment_id == Appointment.id)
                .join(Doctor, Appointment.doctor_id == Doctor.id)
                .join(Clinic, Doctor.clinic_id == Clinic.id)
                .where(PatientCall.state.in_((PatientCallState.DONE, PatientCallState.MISSED,
                                              PatientCallState.CANCELLED)),
                       PatientCall.updated_at >= start, PatientCall.updated_at < end,
                       self._doctors())
                .group_by(Clinic.key, PatientCall.purpose, result))).all()
        return {(practice, purpose, outcome): n for practice, purpose, outcome, n in rows}

    async def on_closed_day(self, appointment_id: int, now: dt.datetime) -> bool:
        """Whether a booking is still to come on a closed day: the only ones the page's
        cancel button may cancel."""
        async with self.db.reading() as session:
            return appointment_id in await covered_bookings(session, now)

    async def practice_of(self, appointment_id: int) -> str | None:
        """The key of the practice a booking is with; None when there is no such booking,
        or it is another practice's than the one asked about (the same answer for both)."""
        async with self.db.reading() as session:
            return await session.scalar(
                select(Clinic.key).join(Doctor, Doctor.clinic_id == Clinic.id)
                .join(Appointment, Appointment.doctor_id == Doctor.id)
                .where(Appointment.id == appointment_id, self._doctors()))

    async def absences(self, now: dt.datetime) -> list[AbsenceRow]:
        """Bookings still on a closed day, soonest first, with their absence call if it was
        planned yet (call_state "planned" otherwise)."""
        async with self.db.reading() as session:
            covered = await covered_bookings(session, now)
            rows = (await session.execute(
                select(Appointment.id, Doctor.name, Doctor.name_en, Patient.phone,
                       Appointment.start_at, Clinic.key)
                .join(Doctor, Appointment.doctor_id == Doctor.id)
                .join(Clinic, Doctor.clinic_id == Clinic.id)
                .join(Patient, Appointment.patient_id == Patient.id)
                .where(Appointment.id.in_(list(covered)), self._doctors())
                .order_by(Appointment.start_at, Appointment.id))).all()
            calls = {(a, subject): (state, outcome) for a, subject, state, outcome in (
                await session.execute(
                    select(PatientCall.appointment_id, PatientCall.subject, PatientCall.state,
                           PatientCall.outcome)
                    .where(PatientCall.purpose == Purpose.ABSENCE,
                           PatientCall.appointment_id.in_(list(covered))))).all()}
        return [AbsenceRow(ident, doctor, doctor_en, phone, start,
                           *calls.get((ident, subject_of(start)), ("planned", None)), practice)
                for ident, doctor, doctor_en, phone, start, practice in rows]
