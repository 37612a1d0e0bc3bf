"""Tables of the booking store; the constraints here, not code, forbid double booking."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import TextClause

from db.lifecycles import (
    LIVE_CONSULTATION,
    LIVE_PATIENT_CALL,
    AppointmentStatus,
    ConsultationState,
    PatientCallState,
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

APPOINTMENT_STATUSES = tuple(AppointmentStatus)
VISIT_KINDS = ("in_person", "phone")
BOOKING_CHANNELS = ("ivr", "staff")
CONSULTATION_STATES = tuple(ConsultationState)
PATIENT_CALL_PURPOSES = ("reminder", "absence", "survey")
PATIENT_CALL_STATES = tuple(PatientCallState)
CLOSURE_SOURCES = ("file", "page")


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Store instants as naive UTC on every backend and hand them back aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect
                             ) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


def _in(column: str, values: tuple[str, ...]) -> TextClause:
    """A partial index's condition: `column` holds one of `values`."""
    return text(_one_of(column, values))


class Base(DeclarativeBase):
    """Declarative base with constraint names Alembic can rely on."""

    metadata = MetaData(naming_convention=NAMING)


class Clinic(Base):
    """The clinic as its staff file describes it."""

    __tablename__ = "clinic"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str] = mapped_column(String(20))
    address: Mapped[str] = mapped_column(Text, default="")
    address_en: Mapped[str] = mapped_column(Text, default="")
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Tehran")
    weekend: Mapped[str] = mapped_column(String(20), default="6")
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Bumped by every clinic load that changes anything, so a booking checked against an
    older schedule is checked again inside its transaction."""
    office: Mapped[str | None] = mapped_column(String(200))
    """The practice's own office (a dial target); None: config.toml's [ivr] office."""
    office_hours: Mapped[str | None] = mapped_column(Text)
    """When that office answers, as clinic/office.py writes it; None: config.toml's."""
    dial: Mapped[str | None] = mapped_column(String(200))
    """How the practice's calls are rung (its own trunk); None: config.toml's."""
    max_channels: Mapped[int | None] = mapped_column(Integer)
    """The most outbound channels its calls hold at once (its trunk's); None: no cap of its own."""
    call_times: Mapped[str | None] = mapped_column(Text)
    """Its own rules for calling its patients: when, which calls, how each is tried
    (PracticeCallRules.text); None: config.toml's."""
    loaded_digest: Mapped[str | None] = mapped_column(String(64))
    """The digest of the clinic file it was last loaded from (db/clinic_sync.py); a load of
    the same file again changes nothing and is skipped. None: compare row by row."""


class ClinicNumber(Base):
    """A number (DID) that reaches one practice: the call's dialled number names its practice."""

    __tablename__ = "clinic_number"

    number: Mapped[str] = mapped_column(String(20), primary_key=True)
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinic.id"), index=True)


class Doctor(Base):
    """A doctor; `active` goes false when the file drops them, so history stays."""

    __tablename__ = "doctor"
    __table_args__ = (UniqueConstraint("clinic_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinic.id"))
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    specialty: Mapped[str] = mapped_column(String(64))
    phone: Mapped[str] = mapped_column(String(20))
    languages: Mapped[str] = mapped_column(String(20), default="fa")
    active: Mapped[bool] = mapped_column(default=True)
    code: Mapped[str | None] = mapped_column(String(8), unique=True)
    """Keyed on a number several practices share, so unique across all of them; an inactive
    doctor holds none."""


class WeeklyHours(Base):
    """One block of a doctor's week (weekday 0 is Saturday)."""

    __tablename__ = "weekly_hours"
    __table_args__ = (
        CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday"),
        CheckConstraint("start_minute < end_minute", name="forward"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    doctor_id: Mapped[int] = mapped_column(ForeignKey("doctor.id"), index=True)
    weekday: Mapped[int] = mapped_column(Integer)
    start_minute: Mapped[int] = mapped_column(Integer)
    end_minute: Mapped[int] = mapped_column(Integer)
    slot_minutes: Mapped[int] = mapped_column(Integer)
    kinds: Mapped[str] = mapped_column(String(40))


class Closure(Base):
    """Whole local days closed for the clinic (doctor_id NULL) or one doctor; a load of the
    clinic file replaces the file's closures and keeps those staff recorded on the page."""

    __tablename__ = "closure"
    __table_args__ = (CheckConstraint(_one_of("source", CLOSURE_SOURCES), name="source"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinic.id"))
    doctor_id: Mapped[int | None] = mapped_column(ForeignKey("doctor.id"), index=True)
    first_day: Mapped[dt.date] = mapped_column(Date)
    last_day: Mapped[dt.date] = mapped_column(Date)
    reason: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(10), default="file", server_default="file")


class Patient(Base):
    """A caller known by their number in E.164, the one form all entry paths normalise to."""

    __tablename__ = "patient"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), unique=True)
    language: Mapped[str] = mapped_column(String(5), default="fa")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    reminders_off_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    """When the patient keyed "no more reminder calls" (None: they get them)."""


class Appointment(Base):
    """A booking; the partial unique indexes make a double booking impossible to write."""

    __tablename__ = "appointment"
    __table_args__ = (
        CheckConstraint(_one_of("status", APPOINTMENT_STATUSES), name="status"),
        CheckConstraint(_one_of("kind", VISIT_KINDS), name="kind"),
        CheckConstraint(_one_of("created_via", BOOKING_CHANNELS), name="created_via"),
        Index("uq_appointment_slot", "doctor_id", "start_at", unique=True,
              sqlite_where=text("status <> 'cancelled'"),
              postgresql_where=text("status <> 'cancelled'")),
        Index("uq_appointment_code", "code", unique=True,
              sqlite_where=text("status = 'booked'"),
              postgresql_where=text("status = 'booked'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    doctor_id: Mapped[int] = mapped_column(ForeignKey("doctor.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    start_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    end_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default=AppointmentStatus.BOOKED)
    code: Mapped[str] = mapped_column(String(8))
    created_via: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


HOLDS_ITS_SLOT = Appointment.status != literal_column(f"'{AppointmentStatus.CANCELLED}'")
"""A booking not cancelled, written as the slot's partial unique index has it: with the status
a bound parameter instead, neither SQLite's planner nor PostgreSQL's generic plan may use that
index, and every availability read scanned every booking."""


class AppointmentEvent(Base):
    """What happened to a booking and when, for the daily figures and for disputes."""

    __tablename__ = "appointment_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointment.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    action: Mapped[str] = mapped_column(String(20))
    via: Mapped[str] = mapped_column(String(10))
    old_start: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    new_start: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class Consultation(Base):
    """A phone appointment's call, claimed by one instance at a time through its lease."""

    __tablename__ = "consultation"
    __table_args__ = (
        CheckConstraint(_one_of("state", CONSULTATION_STATES), name="state"),
        Index("ix_consultation_live", "state", sqlite_where=_in("state", LIVE_CONSULTATION),
              postgresql_where=_in("state", LIVE_CONSULTATION)),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointment.id"), unique=True)
    due_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    state: Mapped[str] = mapped_column(String(20), default=ConsultationState.SCHEDULED)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str | None] = mapped_column(String(40))
    cause: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class CallAttempt(Base):
    """One try at ringing both legs of a consultation, with what each leg did."""

    __tablename__ = "call_attempt"
    __table_args__ = (UniqueConstraint("consultation_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    consultation_id: Mapped[int] = mapped_column(ForeignKey("consultation.id"))
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))
    doctor_channel_id: Mapped[str] = mapped_column(String(80))
    patient_channel_id: Mapped[str] = mapped_column(String(80))
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    doctor_answered_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    patient_answered_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    bridged_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    doctor_cause: Mapped[int | None] = mapped_column(Integer)
    patient_cause: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str | None] = mapped_column(String(40))
    talk_seconds: Mapped[int | None] = mapped_column(Integer)
    resumes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Times nobat missed this attempt's events and went on from Asterisk's channels."""
    unseen_seconds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """How long, in all, no event of it was seen."""


class InboundCall(Base):
    """One call to the IVR, for the daily figures and the day-by-hour heatmap."""

    __tablename__ = "inbound_call"

    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    caller: Mapped[str | None] = mapped_column(String(20))
    dialled: Mapped[str | None] = mapped_column(String(40))
    language: Mapped[str] = mapped_column(String(5), default="fa")
    outcome: Mapped[str | None] = mapped_column(String(40))
    clinic_id: Mapped[int | None] = mapped_column(ForeignKey("clinic.id"))
    """The practice the call ended in; None: it never left the shared number's menu."""


class PatientCall(Base):
    """A call nobat makes to a patient about one booking (a reminder, a doctor's absence, a
    survey), claimed by one instance at a time like a consultation; `subject` tells apart two
    calls of one purpose (an absence call names the slot it is about)."""

    __tablename__ = "patient_call"
    __table_args__ = (
        CheckConstraint(_one_of("purpose", PATIENT_CALL_PURPOSES), name="purpose"),
        CheckConstraint(_one_of("state", PATIENT_CALL_STATES), name="state"),
        UniqueConstraint("appointment_id", "purpose", "subject"),
        Index("ix_patient_call_live", "state", sqlite_where=_in("state", LIVE_PATIENT_CALL),
              postgresql_where=_in("state", LIVE_PATIENT_CALL)),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointment.id"))
    purpose: Mapped[str] = mapped_column(String(20))
    subject: Mapped[str] = mapped_column(String(40), default="")
    due_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    not_after: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    """No attempt starts later than this (the appointment itself, the survey's shelf life)."""
    state: Mapped[str] = mapped_column(String(20), default=PatientCallState.SCHEDULED)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    answered_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    outcome: Mapped[str | None] = mapped_column(String(40))
    """What the patient chose (confirmed, rescheduled, cancelled, opted_out, moved...)."""
    cause: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class SurveyAnswer(Base):
    """A patient's ratings after a phone consultation; unanswered questions stay NULL."""

    __tablename__ = "survey_answer"
    __table_args__ = (
        CheckConstraint("audio BETWEEN 1 AND 5", name="audio"),
        CheckConstraint("doctor BETWEEN 1 AND 5", name="doctor"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointment.id"), unique=True)
    doctor_id: Mapped[int] = mapped_column(ForeignKey("doctor.id"), index=True)
    answered_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    audio: Mapped[int | None] = mapped_column(Integer)
    doctor: Mapped[int | None] = mapped_column(Integer)
    book_again: Mapped[bool | None] = mapped_column()


class WebSession(Base):
    """A status page login, shared by every instance on the store. Only a hash of the id the
    browser holds is kept, so a copy of the store logs nobody in; the CSRF value the page's
    forms carry belongs to this session alone."""

    __tablename__ = "web_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    id_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    clinic_id: Mapped[int | None] = mapped_column(ForeignKey("clinic.id"))
    """The one practice this login may see (its staff token's); None: every practice."""


class PageToken(Base):
    """A practice's staff token for the status page; only its SHA-256 is kept, so a copy of
    the store opens nothing, and a new one for the practice replaces it."""

    __tablename__ = "page_token"

    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinic.id"), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
