"""Consultation claims on SQLite and PostgreSQL: each call is dialled by one claim, at most once."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select, update

from clinic.call_kinds import Leg
from clinic.clinic_file import read_clinic
from clinic.schedule import VisitKind
from db.booking import Booked, BookingPolicy, BookingService
from db.clinic_sync import load_clinic
from db.consultations import (
    DOWN_CAUSE,
    LATE_CAUSE,
    Claim,
    ConsultationStore,
    DueConsultation,
    RetryPolicy,
    cancel_consultation,
    move_consultation,
)
from db.engine import Database
from db.leases import ClaimLost
from db.models import Appointment, CallAttempt, Consultation
from tests.support.claim_race import claim_race
from tests.support.clinics import Clock
from tests.support.consultations import attempts, consultation
from tests.test_schedule import at

DEMO = Path(__file__).resolve().parents[1] / "clinic.toml"
SATURDAY = dt.date(2026, 11, 28)
WORKING_DAYS = [SATURDAY + dt.timedelta(days=n) for n in range(6)]
PATIENT = "09121234567"
LEASE = dt.timedelta(seconds=30)
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def clock() -> Clock:
    return Clock(at(SATURDAY, "09:00"))


@pytest.fixture
async def service(database: Database, clock: Clock) -> BookingService:
    await load_clinic(database, read_clinic(DEMO), clock=clock)
    return BookingService(database, BookingPolicy(), clock)


@pytest.fixture
def store(database: Database, clock: Clock) -> ConsultationStore:
    return ConsultationStore(database, clock)


async def book_phone(service: BookingService, start: dt.datetime, phone: str = PATIENT,
                     doctor_key: str = "dr-hosseini") -> int:
    """Book a phone visit (with dr-hosseini unless told) and return its consultation's id."""
    doctor = next(d.id for d in await service.doctors() if d.key == doctor_key)
    booked = await service.book(phone, doctor, start, VisitKind.PHONE)
    assert isinstance(booked, Booked)
    async with service.db.reading() as session:
        ident = await session.scalar(select(Consultation.id).where(
            Consultation.appointment_id == booked.appointment.id))
    assert ident is not None
    return ident


async def appointment_status(database: Database, ident: int) -> str | None:
    async with database.reading() as session:
        return await session.scalar(select(Appointment.status).join(
            Consultation, Consultation.appointment_id == Appointment.id).where(
            Consultation.id == ident))


async def test_a_due_consultation_is_claimed_once_with_its_attempt_written_first(
        service: BookingService, store: ConsultationStore, database: Database,
        clock: Clock) -> None:
    ident = await book_phone(service, at(SATURDAY, "10:00"))
    assert await store.claim(ident, "nobat-a", LEASE) is None  # not due yet
    clock.now = at(SATURDAY, "10:00")

    claim = await store.claim(ident, "nobat-a", LEASE)

    assert claim is not None
    assert (claim.attempt, claim.lease_until) == (1, at(SATURDAY, "10:00") + LEASE)
    assert claim.channel_id(Leg.DOCTOR) == f"nobat-c{ident}-a1-doctor"
    assert claim.consultation.doctor_phone == "+989121002004"
    assert claim.consultation.patient_phone == "+989121234567"
    assert claim.consultation.duration == dt.timedelta(minutes=10)
    assert await store.claim(ident, "nobat-a", LEASE) is None
    assert await store.claim(ident, "nobat-b", LEASE) is None
    stored = await consultation(database, ident)
    assert (stored.state, stored.claimed_by, stored.attempts) == ("dialling", "nobat-a", 1)
    assert [(a.number, a.state, a.doctor_channel_id, a.patient_channel_id)
            for a in await attempts(database, ident)] == [
        (1, "dialling", f"nobat-c{ident}-a1-doctor", f"nobat-c{ident}-a1-patient")]


async def test_an_expired_lease_is_taken_over_and_the_old_claim_can_write_nothing(
        service: BookingService, store: ConsultationStore, database: Database,
        clock: Clock) -> None:
    ident = await book_phone(service, at(SATURDAY, "10:00"))
    clock.now = at(SATURDAY, "10:00")
    old = await store.claim(ident, "nobat-a", LEASE)
    assert old is not None
    clock.now += LEASE
    assert await store.claim(ident, "nobat-b", LEASE) is None  # the lease still holds
    old = await store.renew(old)
    renewed = clock.now
    await store.leg_answered(old, Leg.DOCTOR, renewed)
    clock.now += LEASE + dt.timedelta(seconds=1)

    new = await store.claim(ident, "nobat-b", LEASE)

    # The same attempt, taken over as it is: its legs may still ring or wait in Asterisk,
    # and nothing is dialled again.
    assert new is not None and (new.attempt, new.taken_over) == (1, True)
    assert new.seen_until == renewed and new.bridged_at is None
    assert new.channel_id(Leg.PATIENT) == f"nobat-c{ident}-a1-patient"
    for step in (store.renew(old), store.leg_answered(old, Leg.DOCTOR, clock.now),
                 store.bridged(old, clock.now), store.abandon(old),
                 store.attempt_failed(old, "late", {}, None)):
        with pytest.raises(ClaimLost, match="claimed by 'nobat-b' at attempt 1"):
            await step
    await store.leg_answered(new, Leg.DOCTOR, clock.now)  # seen again: the first time stays
    await store.resumed(new, 61)
    stored = await consultation(database, ident)
    assert (stored.state, stored.claimed_by, stored.attempts) == ("dialling", "nobat-b", 1)
    assert [(a.state, a.doctor_answered_at, a.resumes, a.unseen_seconds)
            for a in await attempts(database, ident)] == [("dialling", renewed, 1, 61)]


async def test_an_instance_never_takes_back_a_call_it_still_runs(
        service: BookingService, store: ConsultationStore, clock: Clock) -> None:
    ident = await book_phone(service, at(SATURDAY, "10:00"))
    clock.now = at(SATURDAY, "10:00")
    running = await store.claim(ident, "nobat-a", LEASE)
    assert running is not None
    clock.now += LEASE + dt.timedelta(seconds=1)  # its loop stalled past the lease

    assert await store.claim_next("nobat-a", LEASE, 5, running={ident}) == []
    await store.renew(running)  # the call itself carries on
    clock.now += LEASE + dt.timedelta(seconds=1)
    [taken] = await store.claim_next("nobat-b", LEASE, 5)  # another instance may take it
    assert (taken.ident, taken.attempt, taken.taken_over) == (ident, 1, True)


async def test_fifty_racing_tasks_get_exactly_one_claim(
        service: BookingService, store: ConsultationStore, clock: Clock) -> None:
    ident = await book_phone(service, at(SATURDAY, "10:00"))
    clock.now = at(SATURDAY, "10:00")

    results = await asyncio.gather(*(store.claim(ident, f"nobat-{n % 2}", LEASE)
                                     for n in range(50)))

    won = [claim for claim in results if claim is not None]
    assert len(won) == 1 and won[0].attempt == 1


async def test_instances_in_separate_processes_claim_each_consultation_exactly_once(
        service: BookingService, database: Database, database_url: str) -> None:
    doctor = next(d.id for d in await service.doctors() if d.key == "dr-hosseini")
    starts = [s.start for day in WORKING_DAYS for s in await service.free_slots(doctor, day)
              if VisitKind.PHONE in s.kinds][:100]
    assert len(starts) == 100
    idents = [await book_phone(service, start, f"0912{n:07d}") for n, start in enumerate(starts)]
    async with database.writing() as session:  # all due at one instant, none yet over
        await session.execute(update(Consultation).values(due_at=starts[0]))

    won = await claim_race(database_url, starts[0], processes=3, limit=5)

    assert sorted(i for share in won for i in share) == sorted(idents)
    async with database.reading() as session:
        numbers = Counter((await session.scalars(select(CallAttempt.consultation_id))).all())
        states = set((await session.execute(
            select(Consultation.state, Consultation.attempts))).all())
    assert numbers == Counter(idents)
    assert states == {("dialling", 1)}


async def test_claim_next_takes_the_oldest_due_first_and_respects_the_limit(
        service: BookingService, store: ConsultationStore, clock: Clock) -> None:
    wednesday = SATURDAY + dt.timedelta(days=4)  # two doctors take phone visits at 10:15
    later = await book_phone(service, at(wednesday, "10:20"))
    first = await book_phone(service, at(wednesday, "10:15"), "09350000001", "dr-ahmadi")
    future = await book_phone(service, at(wednesday, "11:00"), "09350000002")
    clock.now = at(wednesday, "10:25")
    hour = dt.timedelta(hours=1)

    assert [c.ident for c in await store.claim_next("nobat-a", hour, 1)] == [first]
    assert [c.ident for c in await store.claim_next("nobat-b", hour, 5)] == [later]
    assert await store.claim_next("nobat-b", hour, 5) == []
    clock.now = at(wednesday, "11:00")
    assert [c.ident for c in await store.claim_next("nobat-b", hour, 5)] == [future]


async def test_a_failed_attempt_waits_for_its_retry_and_the_last_one_is_missed(
        service: BookingService, store: ConsultationStore, database: Database,
        clock: Clock) -> None:
    ident = await book_phone(service, at(SATURDAY, "10:00"))
    policy = RetryPolicy(attempts=3, spacing=dt.timedelta(minutes=2))
    clock.now = at(SATURDAY, "10:00")
    causes = [(17, None), (None, 18), (21, 18)]
    for number, (doctor_cause, patient_cause) in enumerate(causes, start=1):
        claim = await store.claim(ident, "nobat-a", LEASE)
        assert claim is not None and claim.attempt == number
        await store.leg_answered(claim, Leg.PATIENT, clock.now)
        clock.now += MINUTE
        retry = policy.next_at(claim, clock.now)
        await store.attempt_failed(claim, f"attempt {number} failed",
                                   {Leg.DOCTOR: doctor_cause, Leg.PATIENT: patient_cause}, retry)
        stored = await consultation(database, ident)
        if number < 3:
            assert retry == clock.now + 2 * MINUTE
            assert (stored.state, stored.due_at, stored.claimed_by) == ("retry_wait", retry, None)
            assert await store.claim(ident, "nobat-b", LEASE) is None  # not yet
            clock.now = retry
    assert retry is None
    assert (stored.state, stored.outcome, stored.cause) == ("missed", "missed",
                                                            "attempt 3 failed")
    assert await appointment_status(database, ident) == "missed"
    assert [(a.number, a.state, a.doctor_cause, a.patient_cause, a.patient_answered_at is None)
            for a in await attempts(database, ident)] == [
        (1, "failed", 17, None, False), (2, "failed", None, 18, False),
        (3, "failed", 21, 18, False)]
    assert await store.claim(ident, "nobat-b", LEASE) is None


async def test_a_bridged_call_completes_the_appointment(
        service: BookingService, store: ConsultationStore, database: Database,
        clock: Clock) -> None:
    ident = await book_phone(service, at(SATURDAY, "10:00"))
    clock.now = at(SATURDAY, "10:00")
    claim = await store.claim(ident, "nobat-a", LEASE)
    assert claim is not None
    with pytest.raises(ClaimLost, match="may not leave bridged: it is dialling"):
        await store.completed(claim, clock.now, 0)
    await store.leg_answered(claim, Leg.DOCTOR, at(SATURDAY, "10:00"))
    await store.leg_answered(claim, Leg.PATIENT, at(SATURDAY, "10:01"))
    await store.bridged(claim, at(SATURDAY, "10:01"))
    clock.now = at(SATURDAY, "10:05")
    claim = await store.renew(claim)
    assert claim.lease_until == at(SATURDAY, "10:05") + LEASE
    with pytest.raises(ClaimLost):
        await store.abandon(claim)  # a bridged call is ended, never handed back

    await store.completed(claim, at(SATURDAY, "10:10"), 540)

    stored = await consultation(database, ident)
    assert (stored.state, stored.outcome, stored.lease_until) == ("completed", "completed", None)
    assert await appointment_status(database, ident) == "completed"
    [attempt] = await attempts(database, ident)
    assert (attempt.state, attempt.doctor_answered_at, attempt.patient_answered_at,
            attempt.bridged_at, attempt.ended_at, attempt.talk_seconds) == (
        "completed", at(SATURDAY, "10:00"), at(SATURDAY, "10:01"), at(SATURDAY, "10:01"),
        at(SATURDAY, "10:10"), 540)
    with pytest.raises(ClaimLost):
        await store.completed(claim, at(SATURDAY, "10:10"), 540)


async def test_an_abandoned_claim_is_due_again_at_once(
        service: BookingService, store: ConsultationStore, database: Database,
        clock: Clock) -> None:
    ident = await book_phone(service, at(SATURDAY, "10:00"))
    clock.now = at(SATURDAY, "10:00")
    claim = await store.claim(ident, "nobat-a", LEASE)
    assert claim is not None
    await store.abandon(claim)
    taken_over = await store.claim(ident, "nobat-b", LEASE)
    assert taken_over is not None and taken_over.attempt == 2
    assert [a.state for a in await attempts(database, ident)] == ["abandoned", "dialling"]


async def test_a_cancelled_consultation_is_never_claimed(
        service: BookingService, store: ConsultationStore, clock: Clock) -> None:
    ident = await book_phone(service, at(SATURDAY, "12:00"))
    [appointment] = await service.upcoming(PATIENT)
    await service.cancel(appointment.id, PATIENT)
    clock.now = at(SATURDAY, "12:00")
    assert await store.claim(ident, "nobat-a", LEASE) is None
    assert await store.due_times(at(SATURDAY, "09:00"), at(SATURDAY, "13:00")) == []


async def test_at_start_old_consultations_are_missed_and_recent_ones_still_due(
        service: BookingService, store: ConsultationStore, database: Database,
        clock: Clock) -> None:
    old = await book_phone(service, at(SATURDAY, "10:00"))
    recent = await book_phone(service, at(SATURDAY, "10:30"), "09350000001")
    await book_phone(service, at(SATURDAY, "11:00"), "09350000002")
    await book_phone(service, at(SATURDAY, "12:00"), "09350000003")
    crashed = await book_phone(service, at(SATURDAY, "10:10"), "09350000004")
    clock.now = at(SATURDAY, "10:10")
    assert await store.claim(crashed, "nobat-a", LEASE) is not None
    now = at(SATURDAY, "10:35")  # nobat was down from 10:11 to 10:35

    assert await store.sweep_missed(now, grace=dt.timedelta(minutes=10)) == [old]

    stored = await consultation(database, old)
    assert (stored.state, stored.outcome, stored.cause) == ("missed", "missed", DOWN_CAUSE)
    assert await appointment_status(database, old) == "missed"
    # The attempt nobat-a left dialling is not swept: its parties may still wait in
    # Asterisk, so it is taken over and goes on from what Asterisk's channels say.
    assert (await consultation(database, crashed)).state == "dialling"
    assert await store.due_times(now, now + dt.timedelta(minutes=30)) == [at(SATURDAY, "11:00")]
    clock.now = now
    claims = await store.claim_next("nobat-b", LEASE, 5)
    assert sorted((c.ident, c.attempt, c.taken_over) for c in claims) == [
        (recent, 1, False), (crashed, 1, True)]
    assert await store.sweep_missed(now, grace=dt.timedelta(minutes=10)) == []


async def test_a_consultation_whose_booked_time_is_over_is_never_dialled(
        service: BookingService, store: ConsultationStore, database: Database,
        clock: Clock) -> None:
    crashed = await book_phone(service, at(SATURDAY, "10:00"))
    waited = await book_phone(service, at(SATURDAY, "10:10"), "09350000001")
    clock.now = at(SATURDAY, "10:00")
    assert await store.claim(crashed, "nobat-a", LEASE) is not None  # then nobat-a stops
    clock.now = at(SATURDAY, "10:20")  # both booked ten-minute times are over

    # nobat-a's attempt is taken over as it is (a party may still wait in Asterisk, to be
    # told and released); with nothing left there it is given back, and not dialled again.
    [taken] = await store.claim_next("nobat-b", LEASE, 5)
    assert (taken.ident, taken.attempt, taken.taken_over) == (crashed, 1, True)
    await store.abandon(taken)
    assert await store.claim_next("nobat-b", LEASE, 5) == []

    for ident in (crashed, waited):
        stored = await consultation(database, ident)
        assert (stored.state, stored.cause) == ("missed", LATE_CAUSE)
        assert await appointment_status(database, ident) == "missed"
    assert [a.state for a in await attempts(database, crashed)] == ["abandoned"]
    assert await attempts(database, waited) == []


def test_retries_stay_inside_the_booked_window() -> None:
    booked = DueConsultation(1, 1, at(SATURDAY, "10:00"), "dialling", 1, at(SATURDAY, "10:00"),
                             at(SATURDAY, "10:10"), "", "", "", "", "", "fa", 1, "",
                             "")
    claim = Claim(booked, attempt=1, instance="nobat-a", lease=LEASE,
                  lease_until=at(SATURDAY, "10:00") + LEASE)
    policy = RetryPolicy(attempts=3, spacing=dt.timedelta(minutes=2))
    assert policy.next_at(claim, at(SATURDAY, "10:01")) == at(SATURDAY, "10:03")
    assert policy.next_at(claim, at(SATURDAY, "10:08")) is None
    assert policy.next_at(dataclasses.replace(claim, attempt=3),
                          at(SATURDAY, "10:01")) is None
    narrow = RetryPolicy(window=dt.timedelta(minutes=4))
    assert narrow.next_at(claim, at(SATURDAY, "10:01")) == at(SATURDAY, "10:03")
    assert narrow.next_at(claim, at(SATURDAY, "10:02")) is None


async def test_a_booking_change_never_moves_a_call_that_got_under_way(
        service: BookingService, store: ConsultationStore, database: Database,
        clock: Clock) -> None:
    # The booking service checks first that no call is under way; a claim that wins in
    # between (another instance, on PostgreSQL) must still keep the booking where it is.
    ident = await book_phone(service, at(SATURDAY, "10:00"))
    clock.now = at(SATURDAY, "10:00")
    claim = await store.claim(ident, "nobat-a", LEASE)
    assert claim is not None
    appointment_id = claim.consultation.appointment_id
    later = at(SATURDAY, "12:00")
    async with database.writing() as session:
        assert not await move_consultation(session, appointment_id, later, clock.now)
        assert not await cancel_consultation(session, appointment_id, clock.now)
    stored = await consultation(database, ident)
    assert (stored.state, stored.due_at, stored.claimed_by) == (
        "dialling", at(SATURDAY, "10:00"), "nobat-a")
    await store.leg_answered(claim, Leg.DOCTOR, clock.now)  # the claim still holds
    other = await book_phone(service, at(SATURDAY, "11:00"), phone="09121234568")
    async with database.writing() as session:
        assert await move_consultation(session, (await consultation(database, other))
                                       .appointment_id, later, clock.now)
    assert (await consultation(database, other)).due_at == later
