"""Calls nobat makes to patients about a booking: planned from the store, claimed like
consultations, and checked again when claimed, so a stale call is never made.

Reminders are planned for booked appointments, absence calls for booked appointments that a
closure (a doctor's absence, a holiday) now covers, surveys for consultations that were
talked through. Each row names the slot it is about (`subject`): a booking moved since is a
new subject, and the old call is dropped when it comes due.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from sqlalchemy import Select, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.call_kinds import CallKind, Leg, call_ref
from clinic.call_times import CallHours, CallTries, PracticeCallRules, ReminderTimes
from clinic.schedule import day_bounds
from db.availability import catalogs
from db.engine import Clock, Database, one_line, utc_now
from db.leases import (
    GIVEN_BACK,
    CallingPractice,
    LeasedClaim,
    LeasedStore,
    PracticeRoom,
    Trunked,
    due_again,
    over_trunks,
    practice_columns,
    trunk_caps,
)
from db.lifecycles import (
    PATIENT_CALL,
    AppointmentStatus,
    ConsultationState,
    PatientCallState,
)
from db.lifecycles import PatientCallStep as Step
from db.models import (
    Appointment,
    CallAttempt,
    Clinic,
    Closure,
    Consultation,
    Doctor,
    Patient,
    PatientCall,
)
from db.records import columns_of, record_of
from db.unreadable import UNREADABLE, Unreadable

SURVEY_SHELF_LIFE = dt.timedelta(days=1)
"""A survey not answered within a day of the consultation is not worth a call any more."""
STOPPED_CAUSE = "nobat stopped during the call"
QUIET_PAST_ITS_TIME = "its practice's quiet hours last past its time"
"""Why a call due before the quiet hours, not rung by their start, is dropped: at their end
it would be too late (a reminder after the change cut-off, say)."""
UNREADABLE_PAST_ITS_TIME = "its practice's row could not be read before its time"
"""Why a call is dropped whose practice's row (its rules, zone or line) stayed unreadable until
too late."""
PRACTICE_STOPPED = "its practice no longer makes these calls"
"""Why a planned call is dropped whose practice's clinic file has turned its kind off."""
UNREADABLE_HOLD = dt.timedelta(minutes=5)
"""How long a due call whose practice's row cannot be read is held, unrung, before it is
looked at again (the planner names the practice meanwhile)."""


class Purpose(enum.StrEnum):
    """Why nobat calls; each purpose is a flow of the same name in flows/."""

    REMINDER = "reminder"
    ABSENCE = "absence"
    SURVEY = "survey"


def subject_of(start: dt.datetime) -> str:
    """The slot a call is about, as stored: a moved booking is a different subject."""
    return start.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


@dataclass(frozen=True)
class DuePatientCall:
    """What the dialer and the flow need to know about one patient call."""

    id: int
    appointment_id: int
    purpose: Purpose
    subject: str
    due_at: dt.datetime
    not_after: dt.datetime
    state: str
    attempts: int
    answered_at: dt.datetime | None
    starts_at: dt.datetime
    status: str
    doctor_id: int
    patient_phone: str
    patient_language: str
    reminders_off: bool
    clinic_id: int
    clinic_phone: str
    clinic_name: str
    clinic_timezone: str
    """Its clinic's zone: the local day a closure covers."""
    clinic_folder: str = ""
    """Where its practice's own prompts are (ivr/prompts.py own_key)."""
    clinic_dial: str | None = None
    """Its practice's own dial string, if it has one."""
    clinic_call_times: str | None = None
    """Its practice's own call times, as the store keeps them (PracticeCallRules.text)."""


@dataclass(frozen=True)
class PatientCallClaim(LeasedClaim):
    """The right of one instance to ring one attempt of a patient call."""

    kind: ClassVar[CallKind] = CallKind.PATIENT_CALL
    call: DuePatientCall

    @property
    def ident(self) -> int:
        """The claimed call's id, for logs and lookups."""
        return self.call.id

    @property
    def practice(self) -> CallingPractice:
        """The clinic of the booking's doctor, whose number and name the patient sees."""
        due = self.call
        return CallingPractice(due.clinic_id, due.clinic_phone, due.clinic_name, due.clinic_folder,
                               due.clinic_dial, due.clinic_call_times)


@dataclass(frozen=True)
class PracticeCalling:
    """How one practice's patients are called: when, which calls, how each is tried."""

    hours: CallHours
    reminders: ReminderTimes | None
    """None: the practice sends no reminders."""
    absences: bool
    survey_after: dt.timedelta | None
    """How long after a consultation its patient is rung for the survey; None: not rung."""
    survey_in_call: bool
    """Its patient stays on the line for the survey when a consultation ends."""
    tries: CallTries

    def makes(self, purpose: Purpose) -> bool:
        """Whether the practice makes calls of this purpose (its rules may have changed
        since one was planned)."""
        if purpose is Purpose.REMINDER:
            return self.reminders is not None
        return self.absences if purpose is Purpose.ABSENCE else self.survey_after is not None


@dataclass(frozen=True)
class CallPlanning:
    """Which calls to plan, when they may ring and how they are tried: config.toml's
    [patient_calls], the line's; a practice may set its own, in its own zone."""

    hours: CallHours
    reminder_times: ReminderTimes
    reminders: bool
    absences: bool
    survey: str
    """One of SURVEY_MODES."""
    survey_after: dt.timedelta
    """How long after a consultation a call-back survey rings."""
    tries: CallTries

    def of_practice(self, timezone: str, own: str | None) -> PracticeCalling:
        """How a practice in `timezone` whose own rules the store keeps as `own` calls."""
        return _practice_calling(self, timezone, own)

    def without_zone(self, own: str | None) -> PracticeCalling:
        """How a practice whose own rules the store keeps as `own` calls, its hours in the
        line's zone (for what needs none: its tries, its survey); the line's rules when
        `own` cannot be read (the planner names its practice, its claims hold its calls)."""
        zone = self.hours.tz.key
        return self.calling_of(zone, own) or self.of_practice(zone, None)

    def calling_of(self, timezone: str, own: str | None) -> PracticeCalling | None:
        """How such a practice calls, or None when its stored rules or zone cannot be read
        (a row edited by hand; the planner reports it)."""
        try:
            return self.of_practice(timezone, own)
        except UNREADABLE:
            return None


@functools.lru_cache(maxsize=1024)
def _practice_calling(planning: CallPlanning, timezone: str, own: str | None
                      ) -> PracticeCalling:
    rules = PracticeCallRules.of_text(own)
    hours = rules.hours(planning.hours, ZoneInfo(timezone))
    reminding = planning.reminders if rules.reminders is None else rules.reminders
    survey = rules.survey or planning.survey
    after = planning.survey_after if rules.survey_after_minutes is None \
        else dt.timedelta(minutes=rules.survey_after_minutes)
    return PracticeCalling(
        hours, rules.reminder_times(planning.reminder_times, hours) if reminding else None,
        planning.absences if rules.absence_calls is None else rules.absence_calls,
        after if survey == "call-back" else None, survey == "in-call",
        rules.tries(planning.tries))


@dataclass(frozen=True)
class Plan:
    """What a plan added, and the practices it had to leave out."""

    added: dict[Purpose, int]
    """How many calls of each purpose it planned."""
    unreadable: tuple[Unreadable, ...] = ()
    """The practices it left out, whose patients are not rung until their rows are right."""


_REVISIONS = select(Clinic.id, Clinic.key, Clinic.revision)
"""Each practice's key and revision: whether its line must be looked at again."""


async def _practices(session: AsyncSession, planning: CallPlanning
                     ) -> tuple[dict[int, PracticeCalling], tuple[Unreadable, ...],
                                dict[int, tuple[str, int]]]:
    """How every practice calls, by clinic id, but for those whose rules cannot be read: one
    practice's bad row keeps no other practice's patients from being rung; and each
    practice's key and revision."""
    rows = await session.execute(_REVISIONS.add_columns(Clinic.timezone, Clinic.call_times))
    practices, unreadable, revisions = {}, [], {}
    for ident, key, revision, timezone, own in rows:
        revisions[ident] = (key, revision)
        try:
            practices[ident] = planning.of_practice(timezone, own)
        except UNREADABLE as exc:
            unreadable.append(Unreadable(key, one_line(exc)))
    return practices, tuple(unreadable), revisions


class PatientCallStore(LeasedStore[PatientCallClaim]):
    """Plans patient calls and writes each step of them, one transaction a step."""

    model = PatientCall
    lifecycle = PATIENT_CALL
    keep = Step.KEEP
    claim_step = Step.CLAIM
    may_take_over = False

    def __init__(self, database: Database, clock: Clock = utc_now) -> None:
        super().__init__(database, clock)
        self._lines: dict[int, tuple[int, str | None]] = {}
        """Whether each practice's line can be read (its catalog: its zone, its office and
        doctors' hours), and why not, as of its revision when last looked at."""
        self._off_line: frozenset[int] = frozenset()
        """The practices whose line cannot be read: their calls are held, as their patients
        could not hear their flow (the line has taken those practices off)."""

    # -- planning ----------------------------------------------------------------------

    async def plan(self, planning: CallPlanning) -> Plan:
        """Add the calls now needed and not yet planned, of every practice whose times can
        be read; says how many of each it added, and which practices it left out."""
        now = self.clock()
        rows: list[dict[str, Any]] = []
        async with self.db.reading() as session:
            practices, unreadable, revisions = await _practices(session, planning)
            unreadable += await self._lines_unreadable(revisions, practices)
            making = {purpose: {clinic: calling for clinic, calling in practices.items()
                                if calling.makes(purpose)} for purpose in Purpose}
            # Read once for both: a covered booking gets an absence call, not a reminder.
            covered = (await covered_bookings(session, now)
                       if making[Purpose.REMINDER] or making[Purpose.ABSENCE] else {})
            if making[Purpose.REMINDER]:
                rows += await _reminders(session, making[Purpose.REMINDER], covered, now)
            if making[Purpose.ABSENCE]:
                rows += await _absences(session, making[Purpose.ABSENCE], covered, now)
            if making[Purpose.SURVEY]:
                rows += await _surveys(session, making[Purpose.SURVEY], now)
        if rows:
            async def run() -> None:
                async with self.db.writing() as session:
                    await session.execute(self._insert_new(), rows)

            await self.db.retry_locked(run)
        counts: dict[Purpose, int] = {}
        for row in rows:
            counts[row["purpose"]] = counts.get(row["purpose"], 0) + 1
        return Plan(counts, unreadable)

    async def _lines_unreadable(self, revisions: dict[int, tuple[str, int]],
                                practices: dict[int, PracticeCalling]
                                ) -> tuple[Unreadable, ...]:
        """The practices whose line cannot be read, taken out of `practices`: a practice's
        catalog is read again only when its revision moved (a load), so a plan costs nothing
        more while none did."""
        moved = [ident for ident, (_, revision) in revisions.items()
                 if self._lines.get(ident, (None,))[0] != revision]
        if moved:
            read = await catalogs(self.db.rows, moved)
            for ident in moved:
                if ident in read.read or ident in read.unreadable:  # else a load meanwhile
                    self._lines[ident] = (revisions[ident][1], read.unreadable.get(ident))
        off = {ident: why for ident, (_, why) in self._lines.items()
               if why is not None and ident in revisions}
        self._off_line = frozenset(off)
        return tuple(Unreadable(revisions[ident][0], why) for ident, why in off.items()
                     if practices.pop(ident, None) is not None)  # else named already

    def _insert_new(self) -> sqlite.Insert | postgresql.Insert:
        """An INSERT that skips a call already planned (another instance was first)."""
        dialect = sqlite if self.db.is_sqlite else postgresql
        return dialect.insert(PatientCall).on_conflict_do_nothing()

    # -- claims ------------------------------------------------------------------------

    async def claim_next(self, instance: str, lease: dt.timedelta, limit: int,
                         running: Iterable[int] = (), room: PracticeRoom | None = None, *,
                         planning: CallPlanning) -> list[PatientCallClaim]:
        """Claim up to `limit` due calls, oldest first, each practice's within its `room`,
        skipping those another instance wins, those no longer needed (marked cancelled with
        the reason, never rung) and those in their practice's quiet hours (due again at
        their end, by `planning`'s times)."""
        return await self._claim_oldest(
            self._claimable,
            lambda ids, trunked: self._claim_each(ids, instance, lease, planning, trunked),
            limit, running, room)

    async def _claim_each(self, call_ids: list[int], instance: str, lease: dt.timedelta,
                          planning: CallPlanning, trunked: Trunked
                          ) -> list[PatientCallClaim]:
        """Claim each at once: on SQLite their transactions commit as one group; claims that
        come before this process's first plan learn first which practices are off the line."""
        if not self._lines:
            rows = await self.db.rows(_REVISIONS, None)
            await self._lines_unreadable({r.id: (r.key, r.revision) for r in rows}, {})
        claims = await asyncio.gather(*(
            self.claim(i, instance, lease, planning=planning,
                       trunked=trunked) for i in call_ids))
        return [claim for claim in claims if claim is not None]

    async def claim(self, call_id: int, instance: str, lease: dt.timedelta, *,
                    planning: CallPlanning, trunked: Trunked | None = None
                    ) -> PatientCallClaim | None:
        """Take one due call for an attempt, in one conditional UPDATE; a call whose reason
        is gone (booking cancelled or moved, absence lifted, patient opted out, too late) or
        that was answered when its instance stopped is closed instead. One whose practice's
        quiet hours began since it fell due (it waited behind the cap, or no nobat ran) is
        not rung: it is due again at their end, its tries as they were, or dropped if that
        is too late for it; so is one whose practice's stored times cannot be read, held
        `UNREADABLE_HOLD` at a time until they can. A call `trunked` names is claimed only if
        its practice's own trunk has room for it with every instance's calls."""

        async def take(session: AsyncSession) -> PatientCallClaim | None:
            now = self.clock()
            if trunked is not None and call_id in trunked.clinics and await over_trunks(
                    session, CallKind.PATIENT_CALL, [call_id], trunked,
                    await trunk_caps(session, trunked, [call_id])):
                return None
            won = await session.execute(
                update(PatientCall)
                .where(PatientCall.id == call_id, self._claimable(now))
                .values(**self._claimed(instance, lease, now))
                .execution_options(synchronize_session=False))
            if won.rowcount != 1:
                return None
            due = await _due(session, call_id)
            calling = (None if due.clinic_id in self._off_line
                       else planning.calling_of(due.clinic_timezone, due.clinic_call_times))
            hours = None if calling is None else calling.hours
            why_not = None if calling is None else (
                await _stale(session, due, now)  # first: an answered call says so
                or (None if calling.makes(due.purpose) else PRACTICE_STOPPED))
            if why_not is None and (hours is None or not hours.allowed(now)):
                later = (hours.next_allowed_by(now, due.not_after) if hours is not None
                         else min(now + UNREADABLE_HOLD, due.not_after))
                if later is not None and later > now:
                    await _hold_over(session, due, later, now)
                    return None
                why_not = QUIET_PAST_ITS_TIME if hours is not None else UNREADABLE_PAST_ITS_TIME
            if why_not is not None:
                answered = due.answered_at is not None
                step = Step.CLOSE if answered else Step.DROP
                await session.execute(
                    update(PatientCall)
                    .where(PatientCall.id == call_id,
                           PatientCall.state.in_(PATIENT_CALL.leaves(step)))
                    .values(**PATIENT_CALL.writes(step), cause=why_not,
                            outcome=func.coalesce(PatientCall.outcome, "no_choice")
                            if answered else None,
                            claimed_by=None, lease_until=None, attempts=due.attempts - 1,
                            updated_at=now)
                    .execution_options(synchronize_session=False))
                return None
            return PatientCallClaim(due, attempt=due.attempts, instance=instance, lease=lease,
                                    lease_until=now + lease)

        return await self.db.retry_locked(lambda: self.db.write(take))

    async def answered(self, claim: PatientCallClaim, at: dt.datetime) -> None:
        """The patient picked up: from here on the call is never rung again (a time the flow
        recorded first stays)."""
        await self._write_held(claim, Step.KEEP,
                               {"answered_at": func.coalesce(PatientCall.answered_at, at)})

    async def attempt_failed(self, claim: PatientCallClaim, cause: str,
                             retry_at: dt.datetime | None) -> None:
        """Not answered: ring again at `retry_at`, or give up (missed) with `cause`. If its
        flow ran after all (the answer's event was lost with the AMI link), it is done."""
        async with self.db.reading() as session:
            ran = await session.scalar(select(PatientCall.answered_at).where(
                PatientCall.id == claim.ident))
        if ran is not None:
            await self.finished(claim, f"{cause}, after its flow ran")
        elif retry_at is not None:
            await self._write_held(claim, Step.RETRY, due_again(retry_at, cause))
        else:
            await self._write_held(claim, Step.GIVE_UP, {"outcome": "not_reached",
                                                         "cause": cause, "lease_until": None})

    async def finished(self, claim: PatientCallClaim, cause: str | None = None) -> None:
        """The answered call ended; the flow wrote what the patient chose, if anything."""
        await self._write_held(claim, Step.FINISH, {
            "cause": cause, "lease_until": None,
            "outcome": func.coalesce(PatientCall.outcome, "no_choice")})

    async def abandon(self, claim: PatientCallClaim) -> None:
        """On shutdown, give back an attempt not answered; it is due again at once."""
        await self._write_held(claim, Step.GIVE_BACK,
                               {**GIVEN_BACK, "attempts": PatientCall.attempts - 1})

    # -- what the flow reads and writes -------------------------------------------------

    async def live(self, unique_id: str) -> DuePatientCall | None:
        """The call a channel rings for, only while that very attempt is being dialled; or,
        on a consultation's patient leg that the bridge handed over, its in-call survey. A
        stray or replayed AGI request finds nothing."""
        found = call_ref(unique_id)
        if found is None or unique_id != found.channel_id:
            return None
        if found.kind is CallKind.CONSULTATION:
            return await self._in_call_survey(found.ident, unique_id)
        async with self.db.reading() as session:
            due = await _maybe_due(session, found.ident)
        if due is None or due.state not in self.live_states or due.attempts != found.attempt:
            return None
        return due

    async def _in_call_survey(self, ident: int, unique_id: str) -> DuePatientCall | None:
        """The survey of consultation `ident` whose patient leg `unique_id` is (written as a
        call that was answered at once), unless the patient opted out or it was taken
        already."""

        async def run() -> DuePatientCall | None:
            async with self.db.writing() as session:
                now = self.clock()
                row = (await session.execute(
                    select(Consultation.appointment_id, Consultation.attempts)
                    .where(Consultation.id == ident,
                           Consultation.state.in_((ConsultationState.BRIDGED,
                                                   ConsultationState.COMPLETED)))
                )).one_or_none()
                leg = CallKind.CONSULTATION.channel_id(ident, row[1], Leg.PATIENT) if row else None
                if row is None or unique_id != leg:
                    return None
                added = await session.execute(self._insert_new().values(
                    **_row(row[0], Purpose.SURVEY, "", now, now + SURVEY_SHELF_LIFE, now)
                    | {"state": PatientCallState.DONE, "attempts": 1, "answered_at": now,
                       "outcome": "no_choice", "cause": "in-call survey"}
                ).returning(PatientCall.id))
                call_id = added.scalar()
                due = None if call_id is None else await _due(session, call_id)
                return None if due is None or due.reminders_off else due

        return await self.db.retry_locked(run)

    async def flow_started(self, call_id: int) -> None:
        """The patient's line reached the flow: answered, whatever AMI reported (or lost)."""
        async def run() -> None:
            async with self.db.writing() as session:
                now = self.clock()
                await session.execute(
                    update(PatientCall)
                    .where(PatientCall.id == call_id, PatientCall.answered_at.is_(None))
                    .values(answered_at=now, updated_at=now)
                    .execution_options(synchronize_session=False))

        await self.db.retry_locked(run)

    async def chose(self, call_id: int, outcome: str) -> None:
        """Record what the patient chose (the latest choice counts)."""
        async def run() -> None:
            async with self.db.writing() as session:
                await session.execute(
                    update(PatientCall).where(PatientCall.id == call_id)
                    .values(outcome=outcome, updated_at=self.clock())
                    .execution_options(synchronize_session=False))

        await self.db.retry_locked(run)

    async def opt_out(self, call_id: int) -> None:
        """The patient keyed "no more calls": stop reminders and surveys to their number,
        including those already planned (absence calls still come: the clinic changed)."""
        async def run() -> None:
            async with self.db.writing() as session:
                now = self.clock()
                patient_id = await session.scalar(
                    select(Appointment.patient_id).join(PatientCall)
                    .where(PatientCall.id == call_id))
                await session.execute(
                    update(Patient).where(Patient.id == patient_id)
                    .values(reminders_off_at=now).execution_options(synchronize_session=False))
                await session.execute(
                    update(PatientCall)
                    .where(PatientCall.id == call_id)
                    .values(outcome="opted_out", updated_at=now)
                    .execution_options(synchronize_session=False))
                mine = select(Appointment.id).where(Appointment.patient_id == patient_id)
                await session.execute(
                    update(PatientCall)
                    .where(PatientCall.appointment_id.in_(mine),
                           PatientCall.state.in_(PATIENT_CALL.leaves(Step.OPT_OUT)),
                           PatientCall.purpose.in_([Purpose.REMINDER, Purpose.SURVEY]))
                    .values(**PATIENT_CALL.writes(Step.OPT_OUT), cause="the patient opted out",
                            updated_at=now)
                    .execution_options(synchronize_session=False))

        await self.db.retry_locked(run)


async def _stale(session: AsyncSession, due: DuePatientCall, now: dt.datetime) -> str | None:
    """Why a call about to be rung is no longer needed, or None when it still is."""
    if due.answered_at is not None:
        return STOPPED_CAUSE
    if now > due.not_after:
        return "its time passed before it could be rung"
    if due.purpose is Purpose.SURVEY:
        return "the patient opted out" if due.reminders_off else None
    if due.status != AppointmentStatus.BOOKED or subject_of(due.starts_at) != due.subject:
        return "the booking was cancelled or moved"
    if due.purpose is Purpose.REMINDER and due.reminders_off:
        return "the patient opted out"
    covered = await _covered(session, due)
    if due.purpose is Purpose.ABSENCE and not covered:
        return "the absence was lifted"
    if due.purpose is Purpose.REMINDER and covered:
        return "a closure covers the booking: its absence call says so instead"
    return None


async def _covered(session: AsyncSession, due: DuePatientCall) -> bool:
    """Whether a closure of the booking's clinic or doctor covers its start (a local day of
    that clinic: another practice's closures are not its own)."""
    day = due.starts_at.astimezone(ZoneInfo(due.clinic_timezone)).date()
    found = await session.scalar(
        select(Closure.id).where(or_(and_(Closure.doctor_id.is_(None),
                                          Closure.clinic_id == due.clinic_id),
                                     Closure.doctor_id == due.doctor_id),
                                 Closure.first_day <= day, Closure.last_day >= day).limit(1))
    return found is not None


async def _hold_over(session: AsyncSession, due: DuePatientCall, later: dt.datetime,
                     now: dt.datetime) -> None:
    """Give the claimed call back unrung, due at `later` (the end of its practice's quiet
    hours), with the tries it had."""
    await session.execute(
        update(PatientCall)
        .where(PatientCall.id == due.id,
               PatientCall.state.in_(PATIENT_CALL.leaves(Step.HOLD_OVER)))
        .values(**PATIENT_CALL.writes(Step.HOLD_OVER), due_at=later, claimed_by=None,
                lease_until=None, attempts=due.attempts - 1, updated_at=now)
        .execution_options(synchronize_session=False))


async def _due(session: AsyncSession, call_id: int) -> DuePatientCall:
    found = await _maybe_due(session, call_id)
    assert found is not None
    return found


async def _maybe_due(session: AsyncSession, call_id: int) -> DuePatientCall | None:
    row = (await session.execute(_details().where(PatientCall.id == call_id))).one_or_none()
    if row is None:
        return None
    return record_of(DuePatientCall, row, purpose=Purpose(row.purpose),
                     reminders_off=bool(row.reminders_off))


def _details() -> Select[Any]:
    """The columns of a DuePatientCall."""
    return (select(*columns_of(
                DuePatientCall, id=PatientCall.id, appointment_id=PatientCall.appointment_id,
                purpose=PatientCall.purpose, subject=PatientCall.subject,
                due_at=PatientCall.due_at, not_after=PatientCall.not_after,
                state=PatientCall.state, attempts=PatientCall.attempts,
                answered_at=PatientCall.answered_at, starts_at=Appointment.start_at,
                status=Appointment.status, doctor_id=Appointment.doctor_id,
                patient_phone=Patient.phone, patient_language=Patient.language,
                reminders_off=Patient.reminders_off_at.is_not(None), **practice_columns(),
                clinic_timezone=Clinic.timezone))
            .join(Appointment, PatientCall.appointment_id == Appointment.id)
            .join(Doctor, Appointment.doctor_id == Doctor.id)
            .join(Clinic, Doctor.clinic_id == Clinic.id)
            .join(Patient, Appointment.patient_id == Patient.id))


def _row(appointment_id: int, purpose: Purpose, subject: str, due: dt.datetime,
         not_after: dt.datetime, now: dt.datetime) -> dict[str, Any]:
    return {"appointment_id": appointment_id, "purpose": purpose, "subject": subject,
            "due_at": due, "not_after": not_after, "state": PatientCallState.SCHEDULED,
            "attempts": 0, "updated_at": now}


async def _planned(session: AsyncSession, purpose: Purpose,
                   appointment_ids: list[int] | Select[tuple[int]]) -> set[tuple[int, str]]:
    """The (appointment, subject) pairs already planned of `appointment_ids`: a list, or
    a select of them (thousands of ids bound one by one cost more than the statement)."""
    if isinstance(appointment_ids, list) and not appointment_ids:
        return set()
    rows = (await session.execute(
        select(PatientCall.appointment_id, PatientCall.subject)
        .where(PatientCall.purpose == purpose,
               PatientCall.appointment_id.in_(appointment_ids)))).all()
    return {(a, s) for a, s in rows}


async def _reminders(session: AsyncSession, practices: dict[int, PracticeCalling],
                     closed: dict[int, dt.datetime], now: dt.datetime
                     ) -> list[dict[str, Any]]:
    """Booked appointments of the `practices` that remind, coming within the longest of
    their reminder leads, whose slot has no reminder yet (none for a booking a closure
    covers, in `closed`: its patient gets an absence call instead); each at its practice's
    reminder time."""
    days_before = max(calling.reminders.days_before for calling in practices.values()
                      if calling.reminders is not None)
    horizon = now + dt.timedelta(days=days_before + 3)
    coming = (select(Appointment.id, Appointment.start_at, Doctor.clinic_id)
              .join(Patient, Appointment.patient_id == Patient.id)
              .join(Doctor, Appointment.doctor_id == Doctor.id)
              .where(Appointment.status == AppointmentStatus.BOOKED, Appointment.start_at > now,
                     Appointment.start_at <= horizon, Patient.reminders_off_at.is_(None),
                     Doctor.clinic_id.in_(list(practices))))
    rows = (await session.execute(coming)).all()
    ids = coming.with_only_columns(Appointment.id)
    planned = await _planned(session, Purpose.REMINDER, ids)
    answered = set((await session.scalars(
        select(PatientCall.appointment_id)
        .where(PatientCall.purpose == Purpose.REMINDER, PatientCall.answered_at.is_not(None),
               PatientCall.appointment_id.in_(ids)))).all())
    wanted = []
    dues: dict[tuple[int, dt.datetime], dt.datetime | None] = {}  # by practice and start:
    # worked out once for the bookings of its doctors that share a start
    for appointment_id, start, clinic_id in rows:
        subject = subject_of(start)
        if (appointment_id, subject) in planned or appointment_id in closed \
                or clinic_id not in practices:
            continue  # most of them, each minute: no reminder time worked out for these
        times = practices[clinic_id].reminders
        assert times is not None
        if (clinic_id, start) not in dues:
            dues[clinic_id, start] = times.due(start, now)
        if (due := dues[clinic_id, start]) is None:
            continue
        if appointment_id in answered and times.planned(start) < now:
            continue  # moved on a reminder call: no second call at once about the new time
        if due - now > dt.timedelta(days=1):
            continue  # planned when it comes within a day: a booking may still move
        wanted.append(_row(appointment_id, Purpose.REMINDER, subject, due,
                           times.deadline(start), now))
    return wanted


async def covered_bookings(session: AsyncSession, now: dt.datetime) -> dict[int, dt.datetime]:
    """Booked appointments still to come that a closure covers: id -> start. A closure's
    days are its clinic's local days, and a closure of a whole clinic covers the bookings
    of that clinic's doctors only (platform mode keeps many clinics in one store)."""
    closures = (await session.execute(
        select(Closure.clinic_id, Clinic.timezone, Closure.doctor_id, Closure.first_day,
               Closure.last_day)
        .join(Clinic, Closure.clinic_id == Clinic.id))).all()
    found: dict[int, dt.datetime] = {}
    for clinic_id, timezone, doctor_id, first, last in closures:
        try:
            tz = ZoneInfo(timezone)
        except UNREADABLE:
            continue  # a zone edited by hand: the planner leaves its practice out, and names it
        span = day_bounds(first, tz).start, day_bounds(last, tz).end
        if span[1] <= now:
            continue
        query = (select(Appointment.id, Appointment.start_at)
                 .where(Appointment.status == AppointmentStatus.BOOKED, Appointment.start_at > now,
                        Appointment.start_at >= span[0], Appointment.start_at < span[1]))
        if doctor_id is not None:
            query = query.where(Appointment.doctor_id == doctor_id)
        else:
            query = query.where(Appointment.doctor_id.in_(
                select(Doctor.id).where(Doctor.clinic_id == clinic_id)))
        found.update((a, s) for a, s in (await session.execute(query)).all())
    return found


async def _absences(session: AsyncSession, practices: dict[int, PracticeCalling],
                    found: dict[int, dt.datetime], now: dt.datetime) -> list[dict[str, Any]]:
    """Booked appointments a closure now covers (`found`), not yet called about: each at
    the first minute its practice may ring."""
    planned = await _planned(session, Purpose.ABSENCE, list(found))
    clinics = dict((await session.execute(
        select(Appointment.id, Doctor.clinic_id).join(Doctor, Appointment.doctor_id == Doctor.id)
        .where(Appointment.id.in_([a for a in found if (a, subject_of(found[a])) not in planned]))
    )).all())
    wanted = []
    for appointment_id, clinic_id in clinics.items():
        if clinic_id not in practices:
            continue
        start = found[appointment_id]
        due = practices[clinic_id].hours.next_allowed(now)
        if due < start:
            wanted.append(_row(appointment_id, Purpose.ABSENCE, subject_of(start), due, start, now))
    return wanted


async def _surveys(session: AsyncSession, practices: dict[int, PracticeCalling],
                   now: dt.datetime) -> list[dict[str, Any]]:
    """Consultations of the `practices` that survey by calling back, talked through in the
    last day, whose patient was not surveyed yet: each its practice's wait after the end."""
    rows = (await session.execute(
        select(Consultation.appointment_id, CallAttempt.ended_at, Doctor.clinic_id)
        .join(CallAttempt, and_(CallAttempt.consultation_id == Consultation.id,
                                CallAttempt.number == Consultation.attempts))
        .join(Appointment, Consultation.appointment_id == Appointment.id)
        .join(Doctor, Appointment.doctor_id == Doctor.id)
        .join(Patient, Appointment.patient_id == Patient.id)
        .where(Consultation.state == ConsultationState.COMPLETED, CallAttempt.talk_seconds > 0,
               CallAttempt.ended_at > now - SURVEY_SHELF_LIFE,
               Patient.reminders_off_at.is_(None)))).all()
    planned = await _planned(session, Purpose.SURVEY, [a for a, _, _ in rows])
    after = {clinic: calling.survey_after for clinic, calling in practices.items()
             if calling.survey_after is not None}
    return [_row(a, Purpose.SURVEY, "", practices[clinic].hours.next_allowed(
                     ended + after[clinic]), ended + SURVEY_SHELF_LIFE, now)
            for a, ended, clinic in rows if (a, "") not in planned and clinic in after]
