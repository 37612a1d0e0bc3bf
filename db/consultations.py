"""Consultation calls in the store: claimed by one instance at a time, each step written first.

The database is the truth for outbound calls. A consultation is dialled only by the instance
whose conditional UPDATE moved it to `dialling`; every later step checks that the claim still
holds, so a double fire, a restart or a second nobat on the same PostgreSQL never dials twice.
Nothing here knows about AMI: the dialer turns these rows into calls.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import Row, Select, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.call_kinds import CallKind, Leg
from db.leases import (
    GIVEN_BACK,
    CallingPractice,
    LeasedClaim,
    LeasedStore,
    PracticeRoom,
    Trunked,
    claimable,
    due_again,
    lease_expired,
    over_trunks,
    practice_columns,
    trunk_caps,
    waiting_due,
)
from db.lifecycles import CONSULTATION, LIVE_CONSULTATION, AppointmentStatus, AttemptState
from db.lifecycles import ConsultationState as State
from db.lifecycles import ConsultationStep as Step
from db.models import Appointment, CallAttempt, Clinic, Consultation, Doctor, Patient
from db.records import columns_of, record_of

DOWN_CAUSE = "due while nobat was down"
UNSEEN_CAUSE = "ended while no nobat watched it; talk time unknown"
LATE_CAUSE = "the booked time was over before it could be dialled"
CUT = "cut: "
"""How every cause of a bridged call that nobody ended starts: the parties are rung again
for what is left of the time."""
CUT_CAUSE = CUT + "Asterisk restarted during the call"
LINE_CUT_CAUSE = CUT + "the phone line failed during the call"


@dataclass(frozen=True)
class DueConsultation:
    """What the scheduler and the dialer need to know about one consultation call."""

    id: int
    appointment_id: int
    due_at: dt.datetime
    state: str
    attempts: int
    starts_at: dt.datetime
    ends_at: dt.datetime
    doctor_key: str
    doctor_name: str
    doctor_name_en: str
    doctor_phone: str
    patient_phone: str
    patient_language: str
    clinic_id: int
    clinic_phone: str
    clinic_name: str
    cause: str | None = None
    """Why the last attempt ended (CUT_CAUSE: this one reconnects the parties)."""
    clinic_folder: str = ""
    """Where its practice's own prompts are (ivr/prompts.py own_key)."""
    clinic_dial: str | None = None
    """Its practice's own dial string, if it has one."""
    clinic_call_times: str | None = None
    """Its practice's own rules for calling patients (PracticeCallRules.text)."""

    @property
    def duration(self) -> dt.timedelta:
        """The booked length, which bounds the talk time and the retries."""
        return self.ends_at - self.starts_at


@dataclass(frozen=True)
class Claim(LeasedClaim):
    """The right of one instance to dial one attempt of a consultation, both legs."""

    kind: ClassVar[CallKind] = CallKind.CONSULTATION

    consultation: DueConsultation
    bridged_at: dt.datetime | None = None
    """Set when this claim took over a call already bridged (its instance stopped)."""
    answered_before: bool = False
    """For a takeover: a party had answered this attempt before its instance stopped."""

    @property
    def ident(self) -> int:
        """The claimed consultation's id, for logs and lookups."""
        return self.consultation.id

    @property
    def practice(self) -> CallingPractice:
        """The doctor's clinic, whose number and name both parties see."""
        booked = self.consultation
        return CallingPractice(booked.clinic_id, booked.clinic_phone, booked.clinic_name,
                               booked.clinic_folder, booked.clinic_dial,
                               booked.clinic_call_times)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how late a failed consultation call is tried again (from config)."""

    attempts: int = 3
    spacing: dt.timedelta = dt.timedelta(minutes=2)
    window: dt.timedelta | None = None
    """How long after the booked start a retry may still begin; None means until the booked end."""

    def next_at(self, claim: Claim, failed_at: dt.datetime) -> dt.datetime | None:
        """When to try again after this attempt failed, or None when no try is left."""
        if claim.attempt >= self.attempts:
            return None
        booked = claim.consultation
        last = booked.ends_at if self.window is None else booked.starts_at + self.window
        retry = failed_at + self.spacing
        return retry if retry < last else None


MISSED = {**CONSULTATION.writes(Step.MISS), "outcome": "missed", "claimed_by": None,
          "lease_until": None}
"""What a consultation whose time passed before it could be dialled holds."""


class ConsultationStore(LeasedStore[Claim]):
    """Reads due consultations and writes each step of their calls, one transaction a step."""

    model = Consultation
    lifecycle = CONSULTATION
    keep = Step.KEEP
    claim_step = Step.CLAIM
    may_take_over = True

    async def sweep_missed(self, now: dt.datetime, grace: dt.timedelta) -> list[int]:
        """At start: mark consultations whose time passed more than `grace` ago as missed,
        and their appointments too, so they are never dialled late; returns their ids. An
        attempt a stopped instance left dialling is not swept: it is taken over, and goes on
        from what Asterisk's channels say."""

        async def run() -> list[int]:
            async with self.db.writing() as session:
                rows = (await session.execute(
                    update(Consultation)
                    .where(waiting_due(Consultation, now), Consultation.due_at < now - grace,
                           Consultation.state.in_(CONSULTATION.leaves(Step.MISS)))
                    .values(**MISSED, cause=DOWN_CAUSE, updated_at=now)
                    .returning(Consultation.id, Consultation.appointment_id)
                    .execution_options(synchronize_session=False))).all()
                await _missed(session, rows, now)
                return sorted(ident for ident, _ in rows)

        return await self.db.retry_locked(run)

    async def claim(self, consultation_id: int, instance: str, lease: dt.timedelta
                    ) -> Claim | None:
        """Take a due consultation for one attempt, or None when it is not due or is held."""
        claims = await self.claim_all([consultation_id], instance, lease)
        return claims[0] if claims else None

    async def claim_all(self, consultation_ids: Sequence[int], instance: str,
                        lease: dt.timedelta, trunked: Trunked | None = None) -> list[Claim]:
        """Take those of `consultation_ids` that are due, each for one attempt, oldest first.

        Conditional UPDATEs decide (the rows they return), so racing tasks, processes and
        hosts need no lock of their own; the attempt rows with their ChannelIds are written
        in the same transaction, before anything is dialled. A call left bridged by an
        instance that stopped is taken over as it is (same attempt, nothing dialled):
        Asterisk still runs it. One transaction for them all, so a round of due calls costs
        a few statements rather than a few per call.
        """
        ids = list(consultation_ids)
        trunks = trunked or Trunked()

        async def take(session: AsyncSession) -> list[Claim]:
            now = self.clock()
            caps = await trunk_caps(session, trunks, ids)
            # updated_at is left as the stopped instance last wrote it (every step and renewal
            # does): when it last saw the attempt.
            orphans = (await session.execute(
                update(Consultation)
                .where(Consultation.id.in_(ids),
                       lease_expired(Consultation, now, *CONSULTATION.leaves(Step.TAKE_OVER)))
                .values(claimed_by=instance, lease_until=now + lease)
                .returning(Consultation.id, Consultation.updated_at)
                .execution_options(synchronize_session=False))).all()
            claims = [await _taken_over(session, ident, instance, lease, now, last_seen)
                      for ident, last_seen in sorted(orphans)]
            late = (await session.execute(
                update(Consultation)
                .where(Consultation.id.in_(ids), claimable(Consultation, now),
                       Consultation.state.in_(CONSULTATION.leaves(Step.MISS)),
                       Consultation.appointment_id.in_(
                           select(Appointment.id).where(Appointment.end_at <= now)))
                .values(**MISSED, cause=LATE_CAUSE, updated_at=now)
                .returning(Consultation.id, Consultation.appointment_id)
                .execution_options(synchronize_session=False))).all()
            await _missed(session, late, now)
            settled = {o for o, _ in orphans} | {m for m, _ in late}
            over = await over_trunks(session, CallKind.CONSULTATION,
                                     [i for i in ids if i not in settled], trunks, caps)
            won = (await session.execute(
                update(Consultation)
                .where(Consultation.id.in_(set(ids) - over), self._claimable(now))
                .values(**self._claimed(instance, lease, now))
                .returning(Consultation.id)
                .execution_options(synchronize_session=False))).scalars().all()
            if not won:
                return claims
            await _close_stranded(session, list(won), now)
            for row in (await session.execute(_details().where(Consultation.id.in_(won))
                                              .order_by(Consultation.due_at, Consultation.id))):
                details = record_of(DueConsultation, row)
                claim = Claim(details, attempt=details.attempts, instance=instance,
                              lease=lease, lease_until=now + lease)
                session.add(CallAttempt(
                    consultation_id=claim.ident, number=claim.attempt,
                    state=AttemptState.DIALLING, doctor_channel_id=claim.channel_id(Leg.DOCTOR),
                    patient_channel_id=claim.channel_id(Leg.PATIENT), started_at=now))
                claims.append(claim)
            return claims

        return await self.db.retry_locked(lambda: self.db.write(take)) if ids else []

    async def claim_next(self, instance: str, lease: dt.timedelta, limit: int,
                         running: set[int] | None = None, room: PracticeRoom | None = None
                         ) -> list[Claim]:
        """Claim up to `limit` due consultations, oldest first, each practice's within its
        `room`; the rest wait their turn (the channel cap), and those another instance wins
        are skipped. `running` are the calls this instance has in hand: never taken again,
        even if a stalled loop let their lease run out (the call itself renews it or lets
        go)."""
        return await self._claim_oldest(
            lambda now: or_(self._claimable(now),
                            lease_expired(Consultation, now, State.BRIDGED)),
            lambda ids, trunked: self.claim_all(ids, instance, lease, trunked), limit,
            running or (), room)

    async def leg_answered(self, claim: Claim, leg: Leg, at: dt.datetime) -> None:
        """Record that one party picked up (a time already recorded, before a takeover,
        stays)."""
        column = f"{leg}_answered_at"
        await self._step(claim, Step.ANSWER, {},
                         {column: func.coalesce(getattr(CallAttempt, column), at)})

    async def resumed(self, claim: Claim, unseen_seconds: int) -> None:
        """Note that the attempt's events were missed for `unseen_seconds` and it went on
        from Asterisk's channels."""
        await self._step(claim, Step.KEEP, {},
                         {"resumes": CallAttempt.resumes + 1,
                          "unseen_seconds": CallAttempt.unseen_seconds + unseen_seconds})

    async def bridged(self, claim: Claim, at: dt.datetime) -> None:
        """Record that both parties are talking."""
        await self._step(claim, Step.BRIDGE, {},
                         {"state": AttemptState.BRIDGED, "bridged_at": at})

    async def attempt_failed(self, claim: Claim, cause: str,
                             leg_causes: Mapping[Leg, int | None], retry_at: dt.datetime | None,
                             ended_at: dt.datetime | None = None) -> None:
        """End this attempt (at `ended_at`, when it failed; by default now): wait for
        `retry_at`, or, with no retry left, mark the consultation and its appointment missed
        with `cause`; but a call rung again after a cut ends as cut, its appointment
        completed (the talk before the cut is recorded). `leg_causes` are the legs' hang-up
        causes, where known."""
        attempt = {"state": AttemptState.FAILED, "ended_at": ended_at or self.clock(),
                   "outcome": "failed",
                   **{f"{leg}_cause": leg_cause for leg, leg_cause in leg_causes.items()}}
        if retry_at is None and (claim.consultation.cause or "").startswith(CUT):
            # Ringing them again after a cut failed: they did talk, so it is not missed.
            await self._step(claim, Step.END_AFTER_CUT, {"outcome": "cut", "lease_until": None},
                             attempt, AppointmentStatus.COMPLETED)
        elif retry_at is not None:
            await self._step(claim, Step.RETRY, due_again(retry_at, cause), attempt)
        else:
            await self._step(claim, Step.GIVE_UP,
                             {"outcome": "missed", "cause": cause, "lease_until": None},
                             attempt, AppointmentStatus.MISSED)

    async def completed(self, claim: Claim, ended_at: dt.datetime, talk_seconds: int | None,
                        cause: str | None = None) -> None:
        """Record the end of a bridged call; the appointment is completed with it. A call
        that ended unseen has no talk time and says so in `cause`."""
        await self._step(claim, Step.COMPLETE,
                         {"outcome": "completed", "cause": cause, "lease_until": None},
                         {"state": AttemptState.COMPLETED, "ended_at": ended_at,
                          "outcome": "completed", "talk_seconds": talk_seconds},
                         AppointmentStatus.COMPLETED)

    async def cut(self, claim: Claim, ended_at: dt.datetime, talk_seconds: int,
                  retry_at: dt.datetime | None, cause: str = CUT_CAUSE) -> None:
        """A bridged call the PBX lost (a crash or a restart of Asterisk): the attempt is
        recorded cut, with the talk time until then, and the consultation is due again at
        `retry_at` to reconnect the parties; with no time left it ends as cut, and its
        appointment as completed."""
        attempt = {"state": AttemptState.CUT, "ended_at": ended_at, "outcome": "cut",
                   "talk_seconds": talk_seconds}
        if retry_at is not None:
            await self._step(claim, Step.RECONNECT, due_again(retry_at, cause), attempt)
        else:
            await self._step(claim, Step.COMPLETE,
                             {"outcome": "cut", "cause": cause, "lease_until": None},
                             attempt, AppointmentStatus.COMPLETED)

    async def hand_over(self, claim: Claim) -> None:
        """On shutdown: end this instance's lease now, so the next instance takes the
        attempt over at once, as it is."""
        await self._step(claim, Step.KEEP, {"lease_until": self.clock()})

    async def abandon(self, claim: Claim) -> None:
        """Give back a claim not yet bridged; it is due again at once, for this or another
        instance (the dialer has hung up its legs first, or Asterisk has none)."""
        await self._step(claim, Step.GIVE_BACK, GIVEN_BACK,
                         {"state": AttemptState.ABANDONED, "ended_at": self.clock(),
                          "outcome": "abandoned"})

    async def _step(self, claim: Claim, step: Step, consultation: dict[str, Any],
                    attempt: dict[str, Any] | None = None,
                    appointment: AppointmentStatus | None = None) -> None:
        """Write one step of the consultation, its attempt's row and its appointment's
        status in one transaction, only while `claim` holds and the state allows."""

        async def with_it(session: AsyncSession, now: dt.datetime) -> None:
            if attempt:
                await session.execute(
                    update(CallAttempt)
                    .where(CallAttempt.consultation_id == claim.ident,
                           CallAttempt.number == claim.attempt)
                    .values(**attempt)
                    .execution_options(synchronize_session=False))
            if appointment is not None:
                await session.execute(
                    update(Appointment)
                    .where(Appointment.id == claim.consultation.appointment_id,
                           Appointment.status == AppointmentStatus.BOOKED)
                    .values(status=appointment, updated_at=now)
                    .execution_options(synchronize_session=False))

        await self._write_held(claim, step, consultation, with_it)


def new_consultation(appointment_id: int, due_at: dt.datetime, now: dt.datetime
                     ) -> Consultation:
    """The call of a phone appointment just booked: scheduled for its start."""
    return Consultation(appointment_id=appointment_id, due_at=due_at,
                        state=State.SCHEDULED, attempts=0, updated_at=now)


async def call_under_way(session: AsyncSession, appointment_id: int) -> bool:
    """Whether the appointment's consultation is being dialled or talked: then the booking
    may not move or go."""
    state = await session.scalar(
        select(Consultation.state).where(Consultation.appointment_id == appointment_id))
    return state in LIVE_CONSULTATION


async def move_consultation(session: AsyncSession, appointment_id: int, due_at: dt.datetime,
                            now: dt.datetime) -> bool:
    """The booking moves (in the caller's transaction): its call is due at the new start,
    its attempts counted afresh. False when the call got under way meanwhile: then the
    booking must stay as it is."""
    return await _booking_step(session, appointment_id, Step.RESCHEDULE, now,
                        {"due_at": due_at, "attempts": 0, "claimed_by": None,
                         "lease_until": None})


async def cancel_consultation(session: AsyncSession, appointment_id: int, now: dt.datetime
                              ) -> bool:
    """The booking is cancelled (in the caller's transaction): its call is never made.
    False when the call got under way meanwhile: then the booking must stay."""
    return await _booking_step(session, appointment_id, Step.CANCEL, now, {})


async def _booking_step(session: AsyncSession, appointment_id: int, step: Step,
                        now: dt.datetime, values: dict[str, Any]) -> bool:
    """A step a change of the booking takes, as its lifecycle allows; False when the
    appointment has a consultation the step may not move (its call is under way)."""
    taken = await session.execute(
        update(Consultation)
        .where(Consultation.appointment_id == appointment_id,
               Consultation.state.in_(CONSULTATION.leaves(step)))
        .values(**CONSULTATION.writes(step), **values, updated_at=now)
        .execution_options(synchronize_session=False))
    if taken.rowcount == 1:
        return True
    return await session.scalar(
        select(Consultation.id).where(Consultation.appointment_id == appointment_id)) is None


async def _missed(session: AsyncSession, rows: Sequence[Row[tuple[int, int]]],
                  now: dt.datetime) -> None:
    """The appointments of consultations just marked missed are missed too, and an attempt
    a stopped instance left dialling is closed."""
    if not rows:
        return
    await session.execute(
        update(Appointment)
        .where(Appointment.id.in_([appointment for _, appointment in rows]),
               Appointment.status == AppointmentStatus.BOOKED)
        .values(status=AppointmentStatus.MISSED, updated_at=now)
        .execution_options(synchronize_session=False))
    await _close_stranded(session, [ident for ident, _ in rows], now)


async def _close_stranded(session: AsyncSession, consultation_ids: list[int],
                          now: dt.datetime) -> None:
    """An attempt still `dialling` when its consultation is claimed again or missed was left
    by an instance that stopped: it is over, abandoned."""
    await session.execute(
        update(CallAttempt)
        .where(CallAttempt.consultation_id.in_(consultation_ids),
               CallAttempt.state == AttemptState.DIALLING)
        .values(state=AttemptState.ABANDONED, outcome="abandoned", ended_at=now)
        .execution_options(synchronize_session=False))


async def _taken_over(session: AsyncSession, consultation_id: int, instance: str,
                      lease: dt.timedelta, now: dt.datetime, seen_until: dt.datetime
                      ) -> Claim:
    """The claim on an attempt whose instance stopped, bridged or not: as it was."""
    details = record_of(DueConsultation, (await session.execute(
        _details().where(Consultation.id == consultation_id))).one())
    bridged_at, doctor, patient = (await session.execute(
        select(CallAttempt.bridged_at, CallAttempt.doctor_answered_at,
               CallAttempt.patient_answered_at)
        .where(CallAttempt.consultation_id == consultation_id,
               CallAttempt.number == details.attempts))).one()
    return Claim(details, bridged_at, taken_over=True, seen_until=seen_until,
                 attempt=details.attempts, instance=instance, lease=lease,
                 lease_until=now + lease,
                 answered_before=doctor is not None or patient is not None)


def _details() -> Select[Any]:
    """The columns of a DueConsultation."""
    return (select(*columns_of(
                DueConsultation, id=Consultation.id, appointment_id=Consultation.appointment_id,
                due_at=Consultation.due_at, state=Consultation.state,
                attempts=Consultation.attempts, starts_at=Appointment.start_at,
                ends_at=Appointment.end_at, doctor_key=Doctor.key, doctor_name=Doctor.name,
                doctor_name_en=Doctor.name_en, doctor_phone=Doctor.phone,
                patient_phone=Patient.phone, patient_language=Patient.language,
                **practice_columns(), cause=Consultation.cause))
            .join(Appointment, Consultation.appointment_id == Appointment.id)
            .join(Doctor, Appointment.doctor_id == Doctor.id)
            .join(Clinic, Doctor.clinic_id == Clinic.id)
            .join(Patient, Appointment.patient_id == Patient.id))
