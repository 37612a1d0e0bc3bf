"""Platform mode: each practice's patients are rung at its own times, in its own zone (its
clinic file's [clinic.patient_calls]), and the line's [patient_calls] where it sets none;
planned, and retried, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from bridge.outbound import CallPlan
from bridge.patient_call import PatientCalls
from clinic.calendar import Weekday
from clinic.call_times import PracticeCallRules
from clinic.schedule import TEHRAN, VisitKind
from db.clinic_sync import load_clinic, record_absence
from db.consultations import ConsultationStore
from db.engine import Database
from db.models import Clinic, PatientCall
from db.patient_calls import (
    PRACTICE_STOPPED,
    QUIET_PAST_ITS_TIME,
    UNREADABLE_HOLD,
    Plan,
    Purpose,
)
from nobat.bridge_wiring import call_planning, patient_calls
from nobat.config import load_config
from tests.support.clinics import Clock
from tests.support.ivr import ROOT
from tests.support.patient_calls import calls
from tests.test_dialer_practices import FIRST, SECOND, booked
from tests.test_schedule import at

KABUL = ZoneInfo("Asia/Kabul")
"""An hour ahead of Tehran's clock (UTC+4:30 against +3:30)."""
OWN_TIMES = PracticeCallRules(quiet_hours=(20 * 60, 10 * 60), reminder_at=10 * 60,
                              no_call_days=frozenset({Weekday.SUNDAY}))
KABUL_PRACTICE = dataclasses.replace(SECOND, timezone="Asia/Kabul", call_times=OWN_TIMES)
"""The second practice keeps its own hours in its own zone: quiet 20:00-10:00, reminders at
10:00, no calls on Sundays (the line's: 21:00-08:00, 18:00, Fridays)."""
SATURDAY = dt.date(2026, 11, 28)
SUNDAY = SATURDAY + dt.timedelta(days=1)
NOW = dt.datetime(2026, 11, 28, 4, 0, tzinfo=dt.UTC)
"""Saturday 07:30 in Tehran, 08:30 in Kabul: quiet hours for both."""
LEASE = dt.timedelta(minutes=1)


def local(day: dt.date, clock: str, tz: ZoneInfo) -> dt.datetime:
    hour, minute = (int(part) for part in clock.split(":"))
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=tz).astimezone(dt.UTC)


async def two_practices(database: Database) -> tuple[int, int]:
    """Both practices, each with a booking at 10:00 its own time on Sunday; their ids."""
    for spec in (FIRST, KABUL_PRACTICE):
        await load_clinic(database, spec, clock=Clock(NOW))
    return (await booked(database, FIRST, "09351110001", at(SUNDAY, "10:00"),
                         VisitKind.IN_PERSON),
            await booked(database, SECOND, "09351110002", local(SUNDAY, "10:00", KABUL),
                         VisitKind.IN_PERSON))


def desk(database: Database, clock: Clock) -> PatientCalls:
    """The patient calls as `nobat serve` wires them from the shipped config.toml."""
    config = load_config(ROOT / "config.toml", env={})
    plan = CallPlan("Local/{exten}@fake-phones", "+982188776655", "Test Clinic")
    return patient_calls(config, database, plan, call_planning(config, TEHRAN), clock=clock)


async def test_a_practices_own_times_are_stored_and_a_file_without_them_keeps_the_lines(
        database: Database) -> None:
    await two_practices(database)
    async with database.reading() as session:
        rows = dict((await session.execute(select(Clinic.key, Clinic.call_times))).all())
    assert rows["test"] is None
    assert PracticeCallRules.of_text(rows["second"]) == OWN_TIMES


async def test_each_practice_is_reminded_at_its_own_time_in_its_own_zone(
        database: Database) -> None:
    first, second = await two_practices(database)
    wired = desk(database, Clock(NOW))
    assert await wired.store.plan(wired.planning) == Plan({Purpose.REMINDER: 2})
    due = {call.appointment_id: call.due_at for call in await calls(database)}
    assert due == {first: at(SATURDAY, "18:00"),  # the line's 18:00, Tehran's clock
                   second: local(SATURDAY, "10:00", KABUL)}  # its own 10:00, Kabul's


async def test_two_practices_bookings_at_one_moment_are_each_reminded_at_its_own_time(
        database: Database) -> None:
    """The planner works out a start's reminder time once per practice, not once for every
    booking at that start."""
    await two_practices(database)
    moment = at(SUNDAY, "11:00")  # 12:30 in Kabul
    first = await booked(database, FIRST, "09351110005", moment, VisitKind.IN_PERSON)
    second = await booked(database, SECOND, "09351110006", moment, VisitKind.IN_PERSON)
    wired = desk(database, Clock(NOW))
    assert await wired.store.plan(wired.planning) == Plan({Purpose.REMINDER: 4})
    due = {call.appointment_id: call.due_at for call in await calls(database)}
    assert (due[first], due[second]) == (at(SATURDAY, "18:00"),
                                         local(SATURDAY, "10:00", KABUL))


async def test_an_absence_call_waits_for_the_end_of_its_own_practices_quiet_hours(
        database: Database) -> None:
    first, second = await two_practices(database)
    await record_absence(database, FIRST.doctors[0].key, SUNDAY, SUNDAY, "sick", "test")
    await record_absence(database, SECOND.doctors[0].key, SUNDAY, SUNDAY, "sick", "second")
    wired = desk(database, Clock(NOW))
    assert await wired.store.plan(wired.planning) == Plan({Purpose.ABSENCE: 2})
    due = {call.appointment_id: call.due_at for call in await calls(database)}
    assert due == {first: at(SATURDAY, "08:00"), second: local(SATURDAY, "10:00", KABUL)}


MONDAY = SUNDAY + dt.timedelta(days=1)


NONSENSE = {
    ("call_times", "{edited by hand"): "Expecting property name",
    ("call_times", '["quiet_hours"]'): "expected an object",
    ("call_times", '{"quiet_hours": [1260]}'): "quiet_hours: expected two different minutes",
    ("call_times", '{"quiet_hours": [480, 480]}'): "quiet_hours: expected two different",
    ("call_times", '{"reminder_at": "18:00"}'): "reminder_at: expected a minute of the day",
    ("call_times", '{"reminder_at": 1440}'): "reminder_at: expected a minute of the day",
    ("call_times", '{"no_call_days": [0, 1, 2, 3, 4, 5, 6]}'): "no_call_days: expected",
    ("call_times", '{"no_call_days": [7]}'): "no_call_days: expected weekdays 0-6",
    ("call_times", '{"quiet_from": 1260}'): "expected an object",
    ("call_times", '{"reminders": "no"}'): "reminders: expected true or false",
    ("call_times", '{"attempts": 0}'): "attempts: expected a whole number 1-10, got 0",
    ("call_times", '{"ring_seconds": true}'): "ring_seconds: expected a whole number 5-300",
    ("call_times", '{"survey": "sometimes"}'): "survey: expected one of in-call, call-back",
    ("timezone", "Asia/Nowhere"): "No time zone found with key Asia/Nowhere",
    ("office_hours", "saturday 9-12"): "expected day=HH:MM-HH:MM",
}
"""A practice's row as a hand edit might leave it (the column, its value), and what the
planner says of each."""


async def edit_second(database: Database, column: str, value: str) -> None:
    """Write `value` into the second practice's `column`, as by hand."""
    async with database.writing() as session:
        await session.execute(update(Clinic).where(Clinic.key == "second")
                              .values({column: value}))


async def put_right(database: Database) -> None:
    """The second practice's row as its file wrote it, at a new revision as a load leaves
    it."""
    await edit_second(database, "call_times", OWN_TIMES.text() or "")
    await edit_second(database, "timezone", "Asia/Kabul")
    async with database.writing() as session:
        await session.execute(update(Clinic).where(Clinic.key == "second")
                              .values(office_hours=None, revision=Clinic.revision + 1))


@pytest.mark.parametrize("edit", NONSENSE)
async def test_a_practice_whose_times_cannot_be_read_is_left_out_of_the_plan_and_named(
        database: Database, edit: tuple[str, str]) -> None:
    """One practice's row keeps no other practice's patients from being reminded; once it
    is put right, its own are planned too."""
    first, second = await two_practices(database)
    await record_absence(database, SECOND.doctors[0].key, MONDAY, MONDAY, "sick", "second")
    await booked(database, SECOND, "09351110004", local(MONDAY, "12:00", KABUL),
                 VisitKind.IN_PERSON)
    await edit_second(database, *edit)
    wired = desk(database, Clock(NOW))
    plan = await wired.store.plan(wired.planning)
    assert plan.added == {Purpose.REMINDER: 1}
    assert [(u.practice, NONSENSE[edit] in u.reason) for u in plan.unreadable] == \
        [("second", True)]
    assert [call.appointment_id for call in await calls(database)] == [first]
    await put_right(database)
    assert await wired.store.plan(wired.planning) == Plan({Purpose.REMINDER: 1,
                                                           Purpose.ABSENCE: 1})
    assert {call.appointment_id for call in await calls(database)} > {first, second}


@pytest.mark.parametrize("edit", [("call_times", "{edited by hand"),
                                  ("timezone", "Asia/Nowhere"),
                                  ("office_hours", "saturday 9-12")])
async def test_a_planned_call_whose_practice_cannot_be_read_is_held_and_the_others_rung(
        database: Database, edit: tuple[str, str]) -> None:
    """Both practices' reminders planned, then one practice's row broken by hand and nobat
    started again: its call is not rung (its quiet hours or its flow are unknown) but held a
    few minutes at a time, the other practice's is claimed as usual, and once the row is
    put right the held one is too."""
    first, second = await two_practices(database)
    clock = Clock(NOW)
    await desk(database, clock).store.plan(desk(database, clock).planning)
    await edit_second(database, *edit)
    clock.now = local(SATURDAY, "18:00", ZoneInfo("Asia/Tehran"))  # both due by now
    wired = desk(database, clock)  # nobat started again: its line leaves the practice out

    async def claimed() -> set[int]:
        claims = await wired.store.claim_next("nobat-1", LEASE, 10, planning=wired.planning)
        return {claim.call.appointment_id for claim in claims}

    assert await claimed() == {first}  # before its planner's first minute, too
    [held] = [call for call in await calls(database) if call.appointment_id == second]
    assert (held.state, held.attempts) == ("scheduled", 0)
    assert held.due_at == clock.now + UNREADABLE_HOLD
    assert (await wired.store.plan(wired.planning)).unreadable[0].practice == "second"
    await put_right(database)
    clock.now = held.due_at
    await wired.store.plan(wired.planning)  # the planner's next minute sees the row right
    assert second in await claimed()


async def monday_absences(database: Database, **rules: object
                          ) -> tuple[int, int, Clock, PatientCalls]:
    """Each practice's doctor away on Monday, a booking of each at 12:00 its own time, and
    their absence calls planned at NOW (the second practice's file setting `rules`): the
    bookings' ids, the clock and the patient calls."""
    await two_practices(database)
    await load_second(database, **rules)
    first = await booked(database, FIRST, "09351110003", at(MONDAY, "12:00"),
                         VisitKind.IN_PERSON)
    second = await booked(database, SECOND, "09351110004", local(MONDAY, "12:00", KABUL),
                          VisitKind.IN_PERSON)
    await record_absence(database, FIRST.doctors[0].key, MONDAY, MONDAY, "sick", "test")
    await record_absence(database, SECOND.doctors[0].key, MONDAY, MONDAY, "sick", "second")
    clock = Clock(NOW)
    wired = desk(database, clock)
    await wired.store.plan(wired.planning)
    return first, second, clock, wired


FAILED = local(SATURDAY, "19:40", KABUL)
"""When both practices' absence calls ring unanswered: 18:40 in Tehran."""


async def retried(database: Database, **rules: object
                  ) -> tuple[dt.datetime | None, dt.datetime | None]:
    """When each practice's absence call is tried again after ringing unanswered at FAILED,
    the second practice's file setting `rules`; None: not again."""
    first, second, clock, wired = await monday_absences(database, **rules)
    clock.now = FAILED
    claims = {claim.call.appointment_id: claim
              for claim in await wired.store.claim_next("nobat-1", LEASE, 10,
                                                            planning=wired.planning)}
    return wired.retry(claims[first], FAILED), wired.retry(claims[second], FAILED)


async def test_an_unanswered_call_is_retried_within_its_own_practices_hours(
        database: Database) -> None:
    """Each practice's doctor is away on Monday, and both absence calls ring unanswered at
    19:40 Kabul time (18:40 in Tehran). 30 minutes on, the line's hours allow a call; the
    Kabul practice's quiet hours do not, nor its no-call Sunday: it rings on Monday at 10:00,
    still before the 12:00 booking."""
    assert await retried(database) == (FAILED + dt.timedelta(minutes=30),
                                       local(MONDAY, "10:00", KABUL))


async def ten_past_eight_in_kabul(database: Database, clock: Clock, wired: PatientCalls,
                                  instance: str) -> set[int]:
    """Claim what is due at 20:10 Kabul time (19:40 in Tehran); the bookings whose absence
    calls are rung."""
    clock.now = local(SATURDAY, "20:10", KABUL)
    claims = await wired.store.claim_next(instance, LEASE, 10, planning=wired.planning)
    return {claim.call.appointment_id for claim in claims
            if claim.call.purpose is Purpose.ABSENCE}


async def absence_calls(database: Database, appointment_id: int) -> list[PatientCall]:
    """The absence calls about one booking."""
    return [call for call in await calls(database)
            if call.appointment_id == appointment_id and call.purpose == Purpose.ABSENCE]


async def test_a_call_due_before_its_practices_quiet_hours_is_not_rung_in_them(
        database: Database) -> None:
    """Each practice's doctor is away on Monday; both absence calls fell due on Saturday
    morning and wait (no nobat ran). At 20:10 Kabul time, 19:40 in Tehran, the Tehran
    practice's is rung; the Kabul practice's quiet hours have begun, and its Sunday is a
    no-call day: it is due on Monday at 10:00, still before the 12:00 booking."""
    first, second, clock, wired = await monday_absences(database)
    assert await ten_past_eight_in_kabul(database, clock, wired, "nobat-1") == {first}
    [waiting] = await absence_calls(database, second)
    assert (waiting.state, waiting.attempts) == ("scheduled", 0)
    assert waiting.due_at == local(MONDAY, "10:00", KABUL)


async def test_a_call_whose_nobat_stopped_while_ringing_is_not_rung_again_in_quiet_hours(
        database: Database) -> None:
    """Both absence calls are ringing at 19:50 Kabul time when their nobat stops. By 20:10
    their leases have run out: the Tehran practice's is rung again (19:40 there, its hours
    allow it); the Kabul practice's is not, but due on Monday at 10:00 with the one try it
    had."""
    first, second, clock, wired = await monday_absences(database)
    clock.now = local(SATURDAY, "19:50", KABUL)
    assert len(await wired.store.claim_next("nobat-1", LEASE, 10,
                                            planning=wired.planning)) == 4  # and reminders
    assert await ten_past_eight_in_kabul(database, clock, wired, "nobat-2") == {first}
    [waiting] = await absence_calls(database, second)
    assert (waiting.state, waiting.attempts, waiting.claimed_by) == ("scheduled", 1, None)
    assert waiting.due_at == local(MONDAY, "10:00", KABUL)


async def test_a_call_whose_quiet_hours_last_past_its_time_is_dropped_with_that_reason(
        database: Database) -> None:
    """The Kabul practice's absence call about Sunday 10:00 fell due on Saturday morning and
    waited until 20:10: its quiet hours and no-call Sunday last until Monday 10:00, after the
    visit. It is dropped, saying so, not left to ring at night or to close later as "its
    time passed"."""
    await two_practices(database)
    await record_absence(database, SECOND.doctors[0].key, SUNDAY, SUNDAY, "sick", "second")
    clock = Clock(NOW)
    wired = desk(database, clock)
    await wired.store.plan(wired.planning)
    clock.now = local(SATURDAY, "20:10", KABUL)
    claims = await wired.store.claim_next("nobat-1", LEASE, 10, planning=wired.planning)
    assert all(claim.call.clinic_timezone == "Asia/Tehran" for claim in claims)
    [dropped] = [call for call in await calls(database) if call.purpose == Purpose.ABSENCE]
    assert (dropped.state, dropped.attempts, dropped.cause) == (
        "cancelled", 0, QUIET_PAST_ITS_TIME)


async def load_second(database: Database, **rules: object) -> None:
    """The second practice loaded again, its clinic file setting `rules` beside its times."""
    await load_clinic(database, dataclasses.replace(
        KABUL_PRACTICE, call_times=dataclasses.replace(OWN_TIMES, **rules)), clock=Clock(NOW))


async def test_a_practice_chooses_which_calls_its_patients_get(database: Database) -> None:
    """The second practice sends no reminders and no absence calls; the first, which sets
    neither, the line's. Turned back on in its file, its absence call is planned."""
    first, second = await two_practices(database)
    await load_second(database, reminders=False, absence_calls=False)
    wired = desk(database, Clock(NOW))
    assert await wired.store.plan(wired.planning) == Plan({Purpose.REMINDER: 1})
    for spec in (FIRST, SECOND):
        await record_absence(database, spec.doctors[0].key, SUNDAY, SUNDAY, "sick", spec.key)
    assert await wired.store.plan(wired.planning) == Plan({Purpose.ABSENCE: 1})
    assert sorted((c.appointment_id, c.purpose) for c in await calls(database)) == [
        (first, "absence"), (first, "reminder")]
    await load_second(database, reminders=False)
    assert await wired.store.plan(wired.planning) == Plan({Purpose.ABSENCE: 1})
    assert (second, "absence") in {(c.appointment_id, c.purpose) for c in await calls(database)}


async def test_a_practice_reminds_as_many_days_ahead_as_its_file_says(
        database: Database) -> None:
    """Two days before a Tuesday visit is its no-call Sunday, so the second practice's
    reminder comes on Saturday at its 10:00; the first's, a day ahead, is not due yet."""
    await two_practices(database)
    await load_second(database, reminder_days_before=2)
    tuesday = SUNDAY + dt.timedelta(days=2)
    first = await booked(database, FIRST, "09351110007", at(tuesday, "11:00"),
                         VisitKind.IN_PERSON)
    second = await booked(database, SECOND, "09351110008", local(tuesday, "11:00", KABUL),
                          VisitKind.IN_PERSON)
    wired = desk(database, Clock(NOW))
    await wired.store.plan(wired.planning)
    due = {call.appointment_id: call.due_at for call in await calls(database)}
    assert first not in due
    assert due[second] == local(SATURDAY, "10:00", KABUL)


async def test_a_planned_call_of_a_kind_its_practice_has_turned_off_is_dropped_unrung(
        database: Database) -> None:
    first, second = await two_practices(database)
    clock = Clock(NOW)
    wired = desk(database, clock)
    assert await wired.store.plan(wired.planning) == Plan({Purpose.REMINDER: 2})
    await load_second(database, reminders=False)
    clock.now = local(SATURDAY, "18:00", ZoneInfo("Asia/Tehran"))
    claims = await wired.store.claim_next("nobat-1", LEASE, 10, planning=wired.planning)
    assert [claim.call.appointment_id for claim in claims] == [first]
    [dropped] = [call for call in await calls(database) if call.appointment_id == second]
    assert (dropped.state, dropped.cause) == ("cancelled", PRACTICE_STOPPED)


async def test_a_practices_calls_are_tried_as_often_as_its_file_says(
        database: Database) -> None:
    """The second practice tries each call once; the first, config.toml's three times."""
    assert await retried(database, attempts=1) == (FAILED + dt.timedelta(minutes=30), None)


@pytest.mark.parametrize(("own", "after"), [({}, 5), ({"survey_after_minutes": 45}, 45)])
async def test_a_practice_that_surveys_by_calling_back_is_rung_back_alone(
        database: Database, own: dict[str, int], after: int) -> None:
    """The line surveys in the call (config.toml's "in-call"); the second practice's file
    says "call-back": after both practices' phone consultations, only its patient gets a
    survey call, its file's survey_after_minutes (else config.toml's) after the end, in its
    own hours."""
    await two_practices(database)
    await load_second(database, survey="call-back", **own)
    start = local(SATURDAY, "12:00", KABUL)
    ids = {await booked(database, spec, phone, start, VisitKind.PHONE): spec.key
           for spec, phone in ((FIRST, "09351110009"), (SECOND, "09351110010"))}
    clock = Clock(start)
    consultations = ConsultationStore(database, clock)
    for claim in await consultations.claim_next("nobat-1", LEASE, 2):
        await consultations.bridged(claim, start)
        await consultations.completed(claim, start + dt.timedelta(minutes=20), 1200)
    wired = desk(database, clock)
    assert (await wired.store.plan(wired.planning)).added[Purpose.SURVEY] == 1
    [survey] = [call for call in await calls(database) if call.purpose == Purpose.SURVEY]
    assert ids[survey.appointment_id] == "second"
    assert survey.due_at == start + dt.timedelta(minutes=20 + after)


async def test_a_practice_retries_as_soon_as_its_file_says(database: Database) -> None:
    """Its own 5 minutes fall before its 20:00 quiet hours, where the line's 30 would wait
    for Monday."""
    assert await retried(database, retry_minutes=5) == (FAILED + dt.timedelta(minutes=30),
                                                        FAILED + dt.timedelta(minutes=5))


async def test_a_practice_reminds_its_patients_where_the_line_reminds_no_one(
        database: Database) -> None:
    _, second = await two_practices(database)
    await load_second(database, reminders=True)
    wired = desk(database, Clock(NOW))
    silent = dataclasses.replace(wired.planning, reminders=False)
    assert await wired.store.plan(silent) == Plan({Purpose.REMINDER: 1})
    assert [call.appointment_id for call in await calls(database)] == [second]
