"""Reminder, absence and survey calls: rung by the dialer, run as flows over FastAGI, heard
and answered by scripted patients on the fake PBX, and recorded in the store."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import pytest
from sqlalchemy import select

from clinic.schedule import TEHRAN, VisitKind
from db.booking import Booked, BookingService
from db.clinic_sync import load_clinic, record_absence
from db.engine import Database
from db.models import Appointment, Patient, SurveyAnswer
from db.patient_calls import Plan, Purpose
from db.surveys import SurveyAverage, SurveyStore
from protocol.call_token import call_token
from tests.fakepbx.agi_caller import DIALPLAN_SECRET, place_call
from tests.fakepbx.script import (
    Answers,
    BusyOnTrunk,
    Caller,
    HangUp,
    Hear,
    NoAnswer,
    Phone,
    Press,
    Wait,
)
from tests.support.clinics import Clock, every_day_clinic
from tests.support.ivr import ivr_rig
from tests.support.patient_calls import (
    FAST_RETRIES,
    PatientLine,
    calls,
    patient_line,
    settled,
)
from tests.test_practice_call_times import desk
from tests.test_schedule import at

SATURDAY = dt.date(2026, 11, 28)
THURSDAY = SATURDAY - dt.timedelta(days=2)
PATIENT = "+989351110001"
DOCTOR = "+989121000001"


def patient(*keys: Hear | Press | HangUp) -> Phone:
    """The patient's phone: answered after half a second, then `keys` on the flow."""
    return Phone("patient1", PATIENT, Answers(0.5), "Patient", listens=keys)


async def book(database: Database, start: dt.datetime, kind: VisitKind = VisitKind.IN_PERSON
               ) -> int:
    """Load a clinic open 10:00-14:00 every day in 30-minute slots and book `start`."""
    clock = Clock(at(THURSDAY, "12:00"))
    await load_clinic(database, every_day_clinic(8, slot_minutes=30, start_minute=10 * 60),
                      clock=clock)
    service = BookingService(database, clock=clock)
    [doctor] = await service.doctors()
    booked = await service.book(PATIENT, doctor.id, start, kind)
    assert isinstance(booked, Booked)
    return booked.appointment.id


async def appointment(database: Database, ident: int) -> Appointment:
    async with database.reading() as session:
        found = await session.get(Appointment, ident)
    assert found is not None
    return found


SATURDAY_10 = ["with-doctor", "doctor/dr-1", "day/saturday", "ord/7", "month/9", "time/hour",
               "num/10"]
"""The booking as the patient hears it: with Dr 1 on Saturday 7 Azar at 10."""
FRIDAY = SATURDAY - dt.timedelta(days=1)
HALF_MINUTE = dt.timedelta(seconds=30)
CALL_BACK = (("survey = \"in-call\"", "survey = \"call-back\""),
             ("survey_after_minutes = 5", "survey_after_minutes = 1"))
"""The survey as a call a minute after the consultation, instead of on the same call."""


async def test_a_reminder_comes_on_thursday_evening_and_1_confirms(
        database: Database, tmp_path: Path) -> None:
    booked = await book(database, at(SATURDAY, "10:00"))
    phones = [patient(Hear("reminder/menu"), Press("1"))]
    async with patient_line(database, tmp_path, phones, at(THURSDAY, "17:59")) as line:
        await line.pbx_line.until(settled(database, 1, "done"), seconds=10.0)
        [call] = await calls(database)
        [heard] = line.heard("patient1")
    # Friday is a no-call day, so the reminder for Saturday came on Thursday at 18:00.
    assert call.due_at == at(THURSDAY, "18:00")
    assert (call.purpose, call.attempts, call.outcome) == ("reminder", 1, "confirmed")
    assert heard == ["reminder/intro", *SATURDAY_10, "reminder/menu", "reminder/confirmed",
                     "goodbye"]
    assert (await appointment(database, booked)).status == "booked"


async def test_2_takes_the_reminded_patient_through_the_ivr_reschedule_path(
        database: Database, tmp_path: Path) -> None:
    booked = await book(database, at(SATURDAY, "10:00"))
    phones = [patient(Hear("reminder/menu"), Press("2"), Hear("choose-day"), Press("1"),
                      Hear("choose-time"), Press("1"), Hear("confirm-keys"), Press("1"))]
    async with patient_line(database, tmp_path, phones, at(THURSDAY, "17:59")) as line:
        await line.pbx_line.until(settled(database, 1, "done"), seconds=10.0)
        [call] = await calls(database)
        [heard] = line.heard("patient1")
    # The first free day after Thursday evening is Friday: 10:00 is its first time.
    moved = await appointment(database, booked)
    assert (moved.status, moved.start_at) == ("booked", at(FRIDAY, "10:00"))
    assert call.outcome == "rescheduled"
    assert ["choose-day", "choose-time", "confirm-keys", "rescheduled"] == [
        name for name in heard if name in ("choose-day", "choose-time", "confirm-keys",
                                           "rescheduled")]
    assert heard[-2:] == ["repeat-code", "goodbye"]  # the IVR's path reads the code out


async def test_3_cancels_after_a_confirming_key(database: Database, tmp_path: Path) -> None:
    booked = await book(database, at(SATURDAY, "10:00"))
    phones = [patient(Hear("reminder/menu"), Press("3"), Hear("confirm-keys"), Press("1"))]
    async with patient_line(database, tmp_path, phones, at(THURSDAY, "17:59")) as line:
        await line.pbx_line.until(settled(database, 1, "done"), seconds=10.0)
        [call] = await calls(database)
        [heard] = line.heard("patient1")
    assert (await appointment(database, booked)).status == "cancelled"
    assert call.outcome == "cancelled"
    assert heard[-4:] == ["confirm-cancel", "confirm-keys", "cancelled", "goodbye"]


async def test_9_stops_reminder_calls_to_that_number(database: Database, tmp_path: Path) -> None:
    await book(database, at(SATURDAY, "10:00"))
    phones = [patient(Hear("reminder/menu"), Press("9"))]
    async with patient_line(database, tmp_path, phones, at(THURSDAY, "17:59")) as line:
        await line.pbx_line.until(settled(database, 1, "done"), seconds=10.0)
        [heard] = line.heard("patient1")
        # A second booking of the same patient gets no reminder any more.
        service = BookingService(database, clock=line.pbx_line.clock)
        [doctor] = await service.doctors()
        assert isinstance(await service.book(PATIENT, doctor.id, at(SATURDAY, "11:00"),
                                             VisitKind.IN_PERSON), Booked)
        await line.pbx_line.clock.sleep(10)
        [call] = await calls(database)
    assert call.outcome == "opted_out"
    assert heard[-2:] == ["reminder/opted-out", "goodbye"]
    async with database.reading() as session:
        assert await session.scalar(select(Patient.reminders_off_at)) is not None


async def test_a_reminder_to_a_busy_phone_on_a_sip_trunk_is_recorded_busy(
        database: Database, tmp_path: Path) -> None:
    await book(database, at(SATURDAY, "10:00"))
    phones = [Phone("patient1", PATIENT, BusyOnTrunk(), "Patient")]
    async with patient_line(database, tmp_path, phones, at(THURSDAY, "17:59")) as line:
        await line.pbx_line.until(settled(database, 1, "retry_wait"), seconds=10.0)
        [call] = await calls(database)
    assert (call.attempts, call.cause) == (1, "busy")  # not "unreachable" (Reason 0)


async def test_a_reminder_not_answered_is_tried_again_but_never_at_night_or_on_friday(
        database: Database, tmp_path: Path) -> None:
    await book(database, at(SATURDAY, "10:00"))
    phones = [Phone("patient1", PATIENT, NoAnswer(), "Patient")]
    start = at(THURSDAY, "20:57") + dt.timedelta(seconds=40)
    async with patient_line(database, tmp_path, phones, start) as line:
        await line.pbx_line.until(settled(database, 1, "retry_wait"), seconds=10.0)

        async def tried_twice() -> bool:
            [call] = await calls(database)
            return call.attempts == 2 and call.state == "retry_wait"

        await line.pbx_line.until(tried_twice, seconds=10.0)
        [call] = await calls(database)
        originates = line.pbx_line.originates()
    # 20:57:40 and 20:58:50 rang unanswered (the second 70 s before the quiet hours, which it
    # must not reach: it would wait for their end; the margin is for a loaded machine, where
    # a scripted minute is 1.2 real seconds); a minute later is 21:00:00, inside them;
    # Friday is a no-call day: the third try waits for Saturday 08:00, which is still before
    # the change cut-off (two hours before the visit).
    assert call.due_at == at(SATURDAY, "08:00")
    assert call.cause == "no_answer"
    assert sorted(originates) == ["nobat-p1-a1", "nobat-p1-a2"]
    assert line.heard("patient1") == []


async def test_a_call_that_waited_past_the_start_of_the_quiet_hours_waits_for_their_end(
        database: Database, tmp_path: Path) -> None:
    """An absence call fell due at 20:55, but no nobat rang it until 21:05 (none ran, or the
    cap held it back): the patient is not rung at night. It is due again when calls may ring,
    Saturday 08:00 (Friday is a no-call day), its first try still to come."""
    await book(database, at(SATURDAY, "10:00"))
    assert await record_absence(database, "dr-1", SATURDAY, SATURDAY, "sick") == 1
    earlier = desk(database, Clock(at(THURSDAY, "20:55")))
    assert await earlier.store.plan(earlier.planning) == Plan({Purpose.ABSENCE: 1})
    [planned] = await calls(database)
    assert planned.due_at == at(THURSDAY, "20:55")

    async def held_over() -> bool:
        [call] = await calls(database)
        return call.due_at != planned.due_at

    async with patient_line(database, tmp_path, [patient()], at(THURSDAY, "21:05")) as line:
        await line.pbx_line.until(held_over, seconds=10.0)
        [call] = await calls(database)
        assert line.pbx_line.originates() == {}
    assert (call.state, call.attempts, call.due_at) == ("scheduled", 0, at(SATURDAY, "08:00"))


async def test_a_reminder_for_a_booking_cancelled_meanwhile_is_never_rung(
        database: Database, tmp_path: Path) -> None:
    booked = await book(database, at(SATURDAY, "10:00"))
    phones = [patient(Hear("reminder/menu"), Press("1"))]
    async with patient_line(database, tmp_path, phones, at(THURSDAY, "17:59")) as line:
        await line.pbx_line.until(settled(database, 1, "scheduled"))
        service = BookingService(database, clock=line.pbx_line.clock)
        cancelled = await service.cancel(booked, PATIENT)
        assert type(cancelled).__name__ == "Cancelled"
        await line.pbx_line.until(settled(database, 1, "cancelled"), seconds=10.0)
        [call] = await calls(database)
        assert line.pbx_line.originates() == {}
    assert call.cause == "the booking was cancelled or moved"


async def test_a_doctors_absence_calls_the_patient_who_moves_to_the_nearest_free_time(
        database: Database, tmp_path: Path) -> None:
    booked = await book(database, at(SATURDAY, "10:00"))
    phones = [patient(Hear("absence/menu"), Press("1"), Hear("confirm-keys"), Press("1"))]
    async with patient_line(database, tmp_path, phones, at(THURSDAY, "12:00")) as line:
        assert await record_absence(database, "dr-1", SATURDAY, SATURDAY, "sick") == 1
        await line.pbx_line.until(settled(database, 1, "done"), seconds=10.0)
        [call] = [c for c in await calls(database) if c.purpose == "absence"]
        [heard] = line.heard("patient1")
    # Friday's last slot, 13:30, is nearer in time than Sunday's first.
    moved = await appointment(database, booked)
    assert (moved.status, moved.start_at) == ("booked", at(FRIDAY, "13:30"))
    assert call.outcome == "moved"
    assert heard == ["absence/intro", *SATURDAY_10, "absence/menu", "absence/nearest",
                     "day/friday", "ord/6", "month/9", "time/hour", "num/13-o", "num/30",
                     "time/minutes",
                     "confirm-keys", "rescheduled", "goodbye"]


async def test_an_absence_changes_nothing_without_the_patients_key(
        database: Database, tmp_path: Path) -> None:
    booked = await book(database, at(SATURDAY, "10:00"))
    phones = [patient()]
    await record_absence(database, "dr-1", SATURDAY, SATURDAY, "sick")
    async with patient_line(database, tmp_path, phones, at(THURSDAY, "12:00")) as line:
        await line.pbx_line.until(settled(database, 1, "done"), seconds=10.0)
        [call] = [c for c in await calls(database) if c.purpose == "absence"]
        [heard] = line.heard("patient1")
    kept = await appointment(database, booked)
    assert (kept.status, kept.start_at) == ("booked", at(SATURDAY, "10:00"))
    assert call.outcome == "no_choice"
    # No reminder is planned for a booking on a closed day: the absence call said it all.
    assert [c.purpose for c in await calls(database)] == ["absence"]
    assert heard[-1] == "absence/kept"
    assert heard.count("absence/menu") == 3 and heard.count("no-input") == 2


async def test_when_the_doctor_hangs_up_the_patient_answers_the_survey_on_the_same_call(
        database: Database, tmp_path: Path) -> None:
    booked = await book(database, at(THURSDAY, "12:30"), VisitKind.PHONE)
    phones = [Phone("doctor1", DOCTOR, Answers(0.3, talk=20), "Dr 1"),
              patient(Hear("survey/audio"), Press("5"), Hear("survey/doctor"), Press("4"),
                      Hear("survey/again"), Press("2"))]
    async with patient_line(database, tmp_path, phones, at(THURSDAY, "12:29")) as line:
        await line.pbx_line.until(settled(database, 1, "done"), seconds=10.0)
        await line.pbx_line.until(line.pbx_line.quiet)
        [call] = await calls(database)
        [heard] = line.heard("patient1")
        originated = sorted(line.pbx_line.originates())
    assert (call.purpose, call.outcome, call.attempts) == ("survey", "answered", 1)
    assert heard == ["survey/intro", "survey/audio", "survey/doctor", "survey/again",
                     "survey/thanks"]
    assert originated == ["nobat-c1-a1-doctor", "nobat-c1-a1-patient"]  # no second call
    assert (await appointment(database, booked)).status == "completed"
    async with database.reading() as session:
        [answer] = (await session.scalars(select(SurveyAnswer))).all()
    assert (answer.audio, answer.doctor, answer.book_again) == (5, 4, False)


async def test_when_the_time_is_up_the_patient_stays_for_the_survey(
        database: Database, tmp_path: Path) -> None:
    clock = Clock(at(THURSDAY, "12:00"))
    await load_clinic(database, every_day_clinic(8, slot_minutes=5, start_minute=12 * 60),
                      clock=clock)
    service = BookingService(database, clock=clock)
    [doctor] = await service.doctors()
    assert isinstance(await service.book(PATIENT, doctor.id, at(THURSDAY, "12:35"),
                                         VisitKind.PHONE), Booked)
    phones = [Phone("doctor1", DOCTOR, Answers(0.3), "Dr 1"),
              patient(Hear("survey/audio"), Press("3"), HangUp())]
    async with patient_line(database, tmp_path, phones,
                            at(THURSDAY, "12:34") + HALF_MINUTE) as line:
        await line.pbx_line.until(settled(database, 1, "done"), seconds=15.0)
        await line.pbx_line.until(line.pbx_line.quiet)
        [heard] = line.heard("patient1")
        consult = [played for played in line.pbx_line.pbx.heard_by("patient1")]
    assert consult[-2:] == ["nobat/fa/consult/ending-soon", "nobat/fa/consult/time-up"]
    assert heard[:2] == ["survey/intro", "survey/audio"]
    async with database.reading() as session:
        [answer] = (await session.scalars(select(SurveyAnswer))).all()
    assert (answer.audio, answer.doctor) == (3, None)


async def test_a_call_back_survey_comes_a_minute_later_and_the_answers_are_kept(
        database: Database, tmp_path: Path) -> None:
    booked = await book(database, at(THURSDAY, "12:30"), VisitKind.PHONE)
    phones = [Phone("doctor1", DOCTOR, Answers(0.3, talk=20), "Dr 1"),
              patient(Hear("survey/audio"), Press("4"), Hear("survey/doctor"), Press("5"),
                      Hear("survey/again"), Press("1"))]
    edits = (*FAST_RETRIES, *CALL_BACK)
    async with patient_line(database, tmp_path, phones, at(THURSDAY, "12:29"),
                            edits) as line:
        await line.pbx_line.until(settled(database, 1, "done"), seconds=15.0)
        [call] = await calls(database)
        [heard] = line.heard("patient1")
        doctors, weeks = await SurveyStore(database, line.pbx_line.clock).averages(TEHRAN)
    assert (call.purpose, call.outcome) == ("survey", "answered")
    assert (await appointment(database, booked)).status == "completed"
    assert heard == ["survey/intro", "survey/audio", "survey/doctor", "survey/again",
                     "survey/thanks"]
    assert doctors == [SurveyAverage("Dr. 1", 1, 4.0, 5.0, 1.0, "دکتر 1")]
    assert weeks == [SurveyAverage("2026-11-21", 1, 4.0, 5.0, 1.0)]


async def test_a_patient_who_hangs_up_mid_survey_keeps_the_answers_given(
        database: Database, tmp_path: Path) -> None:
    await book(database, at(THURSDAY, "12:30"), VisitKind.PHONE)
    phones = [Phone("doctor1", DOCTOR, Answers(0.3, talk=20), "Dr 1"),
              patient(Hear("survey/audio"), Press("2"), Hear("survey/doctor"), HangUp())]
    edits = (*FAST_RETRIES, *CALL_BACK)
    async with patient_line(database, tmp_path, phones, at(THURSDAY, "12:29"),
                            edits) as line:
        await line.pbx_line.until(settled(database, 1, "done"), seconds=15.0)
    async with database.reading() as session:
        [answer] = (await session.scalars(select(SurveyAnswer))).all()
    assert (answer.audio, answer.doctor, answer.book_again) == (2, None, None)


@pytest.mark.parametrize("uniqueid", ["1700000000.5", "nobat-p1-a1", "nobat-p1-a1-2"])
async def test_an_agi_request_for_a_call_nobat_is_not_making_is_hung_up_unheard(
        database: Database, uniqueid: str) -> None:
    await book(database, at(SATURDAY, "10:00"))
    async with ivr_rig(database, Clock(at(THURSDAY, "18:00"))) as rig:
        transcript = await place_call("127.0.0.1", rig.port, Caller("+982188776655", ()),
                                      script="patient-call?lang=fa", strict=False,
                                      environment={"uniqueid": uniqueid})
    assert transcript.prompts == []
    assert [e.command.verb for e in transcript.exchanges] == ["HANGUP"]
    assert await calls(database) == []


async def test_a_forged_request_for_a_ringing_reminder_needs_its_call_token(
        database: Database, tmp_path: Path) -> None:
    await book(database, at(SATURDAY, "10:00"))
    phones = [Phone("patient1", PATIENT, NoAnswer(), "Patient")]
    async with patient_line(database, tmp_path, phones, at(THURSDAY, "17:59")) as line:
        await line.pbx_line.until(lambda: _ringing(line), seconds=10.0)
        fastagi = line.pbx_line.pbx.fastagi
        assert fastagi is not None

        async def request(token: str) -> list[str]:
            """A request as if from the ringing channel: its ChannelId, this token."""
            heard = await place_call(*fastagi, Caller(PATIENT, (Wait(5), HangUp())),
                                     script="patient-call?lang=fa", strict=False,
                                     args=(f"call={token}",), answered=True,
                                     environment={"uniqueid": "nobat-p1-a1"})
            return [e.command.verb for e in heard.exchanges]

        # The ChannelId is easy to guess; without the token nothing is said or stored.
        assert await request("0" * 32) == ["HANGUP"]
        assert await request("") == ["HANGUP"]
        # The same request with the token the dialer put on the channel runs the flow.
        assert "STREAM FILE" in await request(call_token(DIALPLAN_SECRET, "nobat-p1-a1"))


async def test_a_reminder_ringing_when_nobat_stops_is_hung_up_and_given_back(
        database: Database, tmp_path: Path) -> None:
    await book(database, at(SATURDAY, "10:00"))
    phones = [Phone("patient1", PATIENT, NoAnswer(), "Patient")]
    ringing_long = (("ring_seconds = 30", "ring_seconds = 300"),)  # 6 s real: still ringing
    async with patient_line(database, tmp_path, phones, at(THURSDAY, "18:00"),
                            ringing_long) as line:
        await line.pbx_line.until(lambda: _ringing(line))
        await line.pbx_line.stop(line.pbx_line.dialers[0])
        [call] = await calls(database)
        assert line.pbx_line.pbx.channels == {}
    assert (call.state, call.attempts, call.cause) == (
        "retry_wait", 0, "abandoned when nobat stopped")


async def _ringing(line: PatientLine) -> bool:
    return bool(line.pbx_line.pbx.channels)


async def test_patient_calls_take_no_more_places_than_their_own_cap(
        database: Database, tmp_path: Path) -> None:
    await book(database, at(SATURDAY, "10:00"))
    service = BookingService(database, clock=Clock(at(THURSDAY, "12:00")))
    [doctor] = await service.doctors()
    phones = [patient(Hear("reminder/menu"), Press("1"))]
    for n, start in ((2, "10:30"), (3, "11:00")):
        number = f"+98935111000{n}"
        assert isinstance(await service.book(number, doctor.id, at(SATURDAY, start),
                                             VisitKind.IN_PERSON), Booked)
        phones.append(Phone(f"patient{n}", number, Answers(0.5), "Patient",
                            listens=(Hear("reminder/menu"), Press("1"))))
    edits = (*FAST_RETRIES, ("max_calls = 20\n", "max_calls = 1\n"))
    async with patient_line(database, tmp_path, phones, at(THURSDAY, "17:59"),
                            edits) as line:
        await line.pbx_line.until(settled(database, 3, "done"), seconds=15.0)
        events = line.pbx_line.pbx.events
    # One at a time: each call's first event comes after the previous call hung up.
    spans = []
    for ident in (1, 2, 3):
        mine = [i for i, e in enumerate(events)
                if e.fields.get("Uniqueid") == f"nobat-p{ident}-a1"]
        spans.append((mine[0], mine[-1]))
    spans.sort()
    assert all(done < begun for (_, done), (begun, _) in itertools.pairwise(spans))
    assert {c.outcome for c in await calls(database)} == {"confirmed"}


async def test_a_reminder_answered_while_the_ami_link_is_cut_runs_and_is_never_rung_again(
        database: Database, tmp_path: Path) -> None:
    await book(database, at(SATURDAY, "10:00"))
    phones = [patient(Hear("reminder/menu"), Press("1"))]
    slow = (("ring_seconds = 30", "ring_seconds = 10"), ("retry_minutes = 30", "retry_minutes = 1"))
    async with patient_line(database, tmp_path, phones, at(THURSDAY, "18:00"), slow) as line:
        await line.pbx_line.until(lambda: _ringing(line))
        await line.pbx_line.pbx.cut(3)  # the patient answers and confirms over FastAGI
        await line.pbx_line.until(settled(database, 1, "done"), seconds=10.0)
        [call] = await calls(database)
        originated = line.pbx_line.originates()
    # The link came back with the call up (CoreShowChannels): recorded answered, nothing
    # re-sent, the patient's key kept.
    assert originated == {"nobat-p1-a1": 1}
    assert (call.attempts, call.outcome) == (1, "confirmed")
    assert call.answered_at is not None
