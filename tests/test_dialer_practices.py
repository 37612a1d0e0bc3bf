"""Platform mode, outbound: two practices in one store, and every call nobat dials shows its
own practice's number and name, never the other's (consultations and patient calls, over
the fake PBX's AMI, on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bridge.outbound import CallPlan, PlanFactory
from clinic.call_times import PracticeCallRules
from clinic.clinic_file import ClinicSpec, ClosureSpec
from clinic.phones import normalize
from clinic.schedule import TEHRAN, VisitKind
from db.clinic_sync import load_clinic
from db.consultations import new_consultation
from db.engine import Database
from db.models import (
    Appointment,
    CallAttempt,
    Clinic,
    Consultation,
    Doctor,
    Patient,
    PatientCall,
)
from ivr.prompts import PromptLibrary
from nobat.bridge_wiring import call_planning, per_practice
from nobat.config import load_config
from tests.fakepbx.script import Answers, NoAnswer, Phone
from tests.support.clinics import Clock, every_day_clinic
from tests.support.dialer_line import Line, line
from tests.support.ivr import ROOT
from tests.support.patient_calls import calls, patient_line, settled
from tests.test_dialer import START, doctor, patient
from tests.test_dialer import settled as consultations_settled
from tests.test_schedule import at

FIRST = every_day_clinic(8, slot_minutes=30, start_minute=8 * 60)
SECOND = dataclasses.replace(
    FIRST, key="second", name="درمانگاه دوم", name_en="", phone="+982144332211",
    doctors=(dataclasses.replace(FIRST.doctors[0], key="dr-b", phone=doctor(2).number),))
"""Its own number, its own doctor, and no English name: its callers see its Persian one."""
SHOWN = {"test": ("+982188776655", "Test Clinic"), "second": ("+982144332211", "درمانگاه دوم")}
"""What each practice's calls show: its number and its English name, or its name."""
SATURDAY = dt.date(2026, 11, 28)
PROMPTS = PromptLibrary.load(ROOT / "prompts" / "manifest.toml", "/prompts")
PLANNING = call_planning(load_config(ROOT / "config.toml", env={}), TEHRAN)
"""config.toml's [patient_calls], as nobat serve plans and dials with them."""
THURSDAY = SATURDAY - dt.timedelta(days=2)


async def two_practices(database: Database) -> None:
    """Load both clinic files into the one store, as `nobat clinic load` does for each."""
    clock = Clock(at(THURSDAY, "12:00"))
    for spec in (FIRST, SECOND):
        await load_clinic(database, spec, clock=clock)


async def booked(database: Database, spec: ClinicSpec, phone: str, start: dt.datetime,
                 kind: VisitKind) -> int:
    """Write a booking of `spec`'s doctor straight into the store (the booking paths of a
    second practice are not this test's subject); returns the appointment's id."""
    now = at(THURSDAY, "12:00")
    async with database.writing() as session:
        doctor_id = await session.scalar(select(Doctor.id).where(
            Doctor.key == spec.doctors[0].key))
        assert doctor_id is not None
        person = await session.scalar(select(Patient).where(Patient.phone == normalize(phone)))
        if person is None:
            person = Patient(phone=normalize(phone), created_at=now)
            session.add(person)
            await session.flush()
        appointment = Appointment(
            doctor_id=doctor_id, patient_id=person.id, start_at=start,
            end_at=start + dt.timedelta(minutes=30), kind=kind.value,
            code=f"{spec.key[:2]}{start:%H%M}",
            created_via="ivr", created_at=now, updated_at=now)
        session.add(appointment)
        await session.flush()
        if kind is VisitKind.PHONE:
            session.add(new_consultation(appointment.id, start, now))
        return appointment.id


def shown_to(pbx_line: Line, exten: str) -> set[tuple[str, str]]:
    """Every identity a phone was shown: the caller id it rang with, and any other party's
    that reached it once bridged."""
    return {(seen.number, seen.name) for seen in pbx_line.pbx.seen if seen.exten == exten}


def originated(pbx_line: Line) -> dict[str, str]:
    """The CallerID of each Originate, by the number it rang."""
    return {action["Channel"]: action["CallerID"] for action in pbx_line.actions("Originate")}


def as_practices(plan: CallPlan) -> PlanFactory:
    """Each call dialled as its own practice, as nobat serve dials them."""
    return per_practice(plan, PROMPTS, PLANNING)


async def one_consultation_each(database: Database) -> list[Phone]:
    """A phone consultation of each practice due at START; the phones they ring."""
    await booked(database, FIRST, patient(1).number, START, VisitKind.PHONE)
    await booked(database, SECOND, patient(2).number, START, VisitKind.PHONE)
    return [doctor(1), patient(1), doctor(2), patient(2)]


def announced(pbx_line: Line, variable: str = "NOBAT_ANNOUNCE") -> dict[str, str]:
    """What each leg hears when it answers (NOBAT_ANNOUNCE), or another `variable` its
    Originate set, by the number it rang."""
    heard = {}
    for session in pbx_line.pbx.sessions:
        for action in session.actions:
            if action.name == "Originate":
                fields = list(action.fields)
                variables = dict(value.partition("=")[::2] for name, value in fields
                                 if name == "Variable")
                heard[dict(fields)["Channel"]] = variables.get(variable, "")
    return heard


def both_bridged(database: Database) -> Callable[[], Awaitable[bool]]:
    """A condition for Line.until: both practices' consultations are bridged."""

    async def check() -> bool:
        async with database.reading() as session:
            states = (await session.scalars(select(Consultation.state))).all()
        return list(states) == ["bridged", "bridged"]

    return check


async def test_each_practices_consultation_shows_its_own_number_and_name(
        database: Database) -> None:
    await two_practices(database)
    async with line(database, await one_consultation_each(database), START,
                    plans=as_practices) as pbx_line:
        await pbx_line.until(both_bridged(database), seconds=10.0)
        ids = originated(pbx_line)
        heard = announced(pbx_line)
    first, second = SHOWN["test"], SHOWN["second"]
    for exten in ("doctor1", "patient1"):
        assert ids[f"Local/{exten}@fake-phones/n"] == f'"{first[1]}" <{first[0]}>'
        assert shown_to(pbx_line, exten) == {first}
    for exten in ("doctor2", "patient2"):
        assert ids[f"Local/{exten}@fake-phones/n"] == f'"{second[1]}" <{second[0]}>'
        assert shown_to(pbx_line, exten) == {second}
    assert "/prompts/fa/doctor/test/dr-1&" in heard["Local/patient1@fake-phones/n"]
    assert "/prompts/fa/doctor/second/dr-b&" in heard["Local/patient2@fake-phones/n"]
    assert heard["Local/doctor1@fake-phones/n"] == "/prompts/fa/clinic/test/consult/doctor-intro"
    assert heard["Local/doctor2@fake-phones/n"] == \
        "/prompts/fa/clinic/second/consult/doctor-intro"


async def test_a_failing_plan_of_patient_calls_keeps_no_consultation_from_being_rung(
        database: Database, tmp_path: Path) -> None:
    """Patient calls are planned beside the rounds that claim: a practice row that cannot
    be read (its call times edited by hand into nonsense) leaves that practice out of every
    plan, which is reported, naming it, as the planner's trouble until the row is put
    right, and both practices' consultations are rung and bridged all the same, the
    dialer's rounds working."""
    await two_practices(database)
    phones = await one_consultation_each(database)

    async def call_times(text: str | None) -> None:
        async with database.writing() as session:
            await session.execute(update(Clinic).where(Clinic.key == "second")
                                  .values(call_times=text))

    await call_times("{edited by hand")
    async with patient_line(database, tmp_path, phones, START) as rig:
        dialer = rig.pbx_line.dialers[0]
        await rig.pbx_line.until(both_bridged(database), seconds=10.0)
        trouble, rounds = dialer.planning_trouble, dialer.trouble
        await call_times(None)

        async def cleared() -> bool:
            return dialer.planning_trouble is None

        await rig.pbx_line.until(cleared, seconds=10.0)
    assert trouble is not None and "left out" in trouble[1]
    assert "second (JSONDecodeError: Expecting property name" in trouble[1]
    assert rounds is None


async def test_each_practices_patient_call_shows_its_own_number_and_name(
        database: Database, tmp_path: Path) -> None:
    """The first practice is closed on Saturday: its patient gets an absence call, and the
    second's patient, whose practice is open, the usual reminder (a closure of the whole
    clinic covers that clinic's bookings alone)."""
    await two_practices(database)
    await load_clinic(database, dataclasses.replace(
        FIRST, closures=(ClosureSpec(None, SATURDAY, SATURDAY, "closed"),)),
        clock=Clock(at(THURSDAY, "12:00")))
    ten = at(SATURDAY, "10:00")
    first = await booked(database, FIRST, patient(1).number, ten, VisitKind.IN_PERSON)
    second = await booked(database, SECOND, patient(2).number, ten, VisitKind.IN_PERSON)
    phones = [Phone(f"patient{n}", patient(n).number, Answers(0.5), f"Patient {n}")
              for n in (1, 2)]
    async with patient_line(database, tmp_path, phones, at(THURSDAY, "17:59")) as rig:
        pbx_line = rig.pbx_line
        await pbx_line.until(settled(database, 2, "done"), seconds=10.0)
        made = {call.appointment_id: call.purpose for call in await calls(database)}
    assert made == {first: "absence", second: "reminder"}
    assert shown_to(pbx_line, "patient1") == {SHOWN["test"]}
    assert shown_to(pbx_line, "patient2") == {SHOWN["second"]}


async def test_a_practices_rush_takes_its_share_of_the_cap_and_leaves_the_rest_to_another(
        database: Database) -> None:
    """Four of the first practice's consultations and one of the second's are due; the cap is
    8 channels (four consultations) and each practice's share half of it: the second's
    doctor is rung in the first round, beside two of the first's, not after them."""
    await two_practices(database)
    for n in range(4):
        await booked(database, FIRST, patient(n + 1).number,
                     START - dt.timedelta(minutes=4 - n), VisitKind.PHONE)
    await booked(database, SECOND, patient(5).number, START, VisitKind.PHONE)
    phones = [doctor(1), doctor(2), *(patient(n) for n in range(1, 6))]
    async with line(database, phones, START, cap=8, practice_share=0.5,
                    plans=as_practices) as pbx_line:

        async def first_round() -> bool:
            return len(pbx_line.actions("Originate")) >= 6

        await pbx_line.until(first_round, seconds=10.0)
        rung = [action["Channel"] for action in pbx_line.actions("Originate")][:6]
    assert sorted(rung) == sorted(f"Local/{exten}@fake-phones/n" for exten in (
        "doctor1", "patient1", "doctor1", "patient2", "doctor2", "patient5"))


@pytest.mark.parametrize("share", [0.5, 1.0])
async def test_a_practices_ringing_reminders_leave_another_practices_consultation_its_time(
        database: Database, tmp_path: Path, share: float) -> None:
    """Twelve of the first practice's reminders ring at 18:00 on two nobat instances of 6
    channels each, 30 s each, unanswered; the second practice's consultation is due at
    18:00:05. With each practice's share half the cap, the reminders hold at most one
    channel an instance and the doctor is rung on time; with no share (1.0) they fill both
    caps and the consultation waits for a reminder to give up: the case the share is for."""
    await two_practices(database)
    ten = at(SATURDAY, "10:00")
    for n in range(1, 13):
        await booked(database, FIRST, patient(n).number, ten + dt.timedelta(minutes=30 * n),
                     VisitKind.IN_PERSON)
    due = at(THURSDAY, "18:00") + dt.timedelta(seconds=5)
    await booked(database, SECOND, patient(13).number, due, VisitKind.PHONE)
    phones = [*(Phone(f"patient{n}", patient(n).number, NoAnswer(), f"Patient {n}")
                for n in range(1, 13)), doctor(2), patient(13)]
    async with patient_line(database, tmp_path, phones, at(THURSDAY, "17:59"),
                            (("retry_minutes = 30", "retry_minutes = 1"),),
                            instances=("nobat-1", "nobat-2"), cap=6,
                            practice_share=share) as rig:
        await rig.pbx_line.until(consultations_settled(database, [1], "bridged"), seconds=20.0)
        async with database.reading() as session:
            started = await session.scalar(select(CallAttempt.started_at))
        ringing = {action["Channel"] for action in rig.pbx_line.actions("Originate")}
    assert started is not None
    late = (started - due).total_seconds()
    assert "Local/doctor2@fake-phones/n" in ringing
    if share < 1:
        assert late < 12, late  # a round or two after its time, while the reminders ring
    else:
        assert late > 20, late  # it waited until a reminder's 30 s of ringing were over


async def test_a_practice_with_a_trunk_of_its_own_is_rung_through_it(database: Database) -> None:
    """The second practice's clinic file names its own dial string; the first keeps the
    line's (config.toml's)."""
    await two_practices(database)
    await load_clinic(database, dataclasses.replace(SECOND, dial="Local/{exten}@fake-phones"),
                      clock=Clock(at(THURSDAY, "12:00")))
    async with line(database, await one_consultation_each(database), START,
                    plans=as_practices) as pbx_line:

        async def all_rung() -> bool:
            return len(pbx_line.actions("Originate")) >= 4

        await pbx_line.until(all_rung, seconds=10.0)
        rung = {action["Channel"] for action in pbx_line.actions("Originate")}
    assert rung == {"Local/doctor1@fake-phones/n", "Local/patient1@fake-phones/n",
                    "Local/doctor2@fake-phones", "Local/patient2@fake-phones"}


@pytest.mark.parametrize("instances", [("nobat-1",), ("nobat-1", "nobat-2")])
async def test_a_practice_whose_trunk_carries_few_channels_is_rung_within_them(
        database: Database, instances: tuple[str, ...]) -> None:
    """The first practice's clinic file says its trunk carries 4 channels: of its four due
    consultations two are rung, beside the second's, and the next two wait while those talk,
    though the line's cap (10) would carry them all; with two nobat instances on the store,
    two in all, not two by each."""
    await two_practices(database)
    await load_clinic(database, dataclasses.replace(FIRST, max_channels=4),
                      clock=Clock(at(THURSDAY, "12:00")))
    for n in range(4):
        await booked(database, FIRST, patient(n + 1).number,
                     START - dt.timedelta(minutes=4 - n), VisitKind.PHONE)
    await booked(database, SECOND, patient(5).number, START, VisitKind.PHONE)
    phones = [doctor(1), doctor(2), *(patient(n) for n in range(1, 6))]
    async with line(database, phones, START, instances, cap=10,
                    plans=as_practices) as pbx_line:

        async def first_round() -> bool:
            return len(pbx_line.actions("Originate")) >= 6

        await pbx_line.until(first_round, seconds=10.0)
        await pbx_line.until(consultations_settled(database, [1, 2, 5], "bridged"))
        await pbx_line.until(lambda: asyncio.sleep(0.2, result=True))  # 10 s: five dialer polls
        rung = [action["Channel"] for action in pbx_line.actions("Originate")]
    assert sorted(rung) == sorted(f"Local/{exten}@fake-phones/n" for exten in (
        "doctor1", "patient1", "doctor1", "patient2", "doctor2", "patient5"))


async def test_a_practices_trunk_carries_one_patient_call_at_a_time_over_two_nobats(
        database: Database, tmp_path: Path) -> None:
    """The first practice's trunk carries 3 channels, so one patient call at a time (a
    consultation's two stay free): two nobat instances ring its three reminders one after
    another, never two at once, and all three are made."""
    await two_practices(database)
    await load_clinic(database, dataclasses.replace(FIRST, max_channels=3),
                      clock=Clock(at(THURSDAY, "12:00")))
    ten = at(SATURDAY, "10:00")
    for n in (1, 2, 3):
        await booked(database, FIRST, patient(n).number, ten + dt.timedelta(hours=n),
                     VisitKind.IN_PERSON)
    phones = [Phone(f"patient{n}", patient(n).number, Answers(0.5), f"Patient {n}")
              for n in (1, 2, 3)]
    at_once: list[int] = []

    async def all_done() -> bool:
        async with database.reading() as session:
            states = (await session.scalars(select(PatientCall.state))).all()
        at_once.append(states.count("dialling"))
        return len(states) == 3 and set(states) == {"done"}

    async with patient_line(database, tmp_path, phones, at(THURSDAY, "17:59"),
                            instances=("nobat-1", "nobat-2")) as rig:
        await rig.pbx_line.until(all_done, seconds=20.0)
        rung = [action["Channel"] for action in rig.pbx_line.actions("Originate")]
    assert sorted(rung) == [f"Local/patient{n}@fake-phones/n" for n in (1, 2, 3)]
    assert max(at_once) == 1


async def test_each_practices_patient_call_rings_as_long_as_its_own_rules_say(
        database: Database, tmp_path: Path) -> None:
    """The second practice rings its patients 45 s ([clinic.patient_calls] ring_seconds);
    the first, which sets none, the line's (config.toml's [patient_calls], 10 s here)."""
    await two_practices(database)
    await load_clinic(database, dataclasses.replace(
        SECOND, call_times=PracticeCallRules(ring_seconds=45)),
        clock=Clock(at(THURSDAY, "12:00")))
    ten = at(SATURDAY, "10:00")
    for n, spec in ((1, FIRST), (2, SECOND)):
        await booked(database, spec, patient(n).number, ten, VisitKind.IN_PERSON)
    phones = [Phone(f"patient{n}", patient(n).number, Answers(0.5), f"Patient {n}")
              for n in (1, 2)]
    async with patient_line(database, tmp_path, phones, at(THURSDAY, "17:59")) as rig:
        await rig.pbx_line.until(settled(database, 2, "done"), seconds=10.0)
        rung = {action["Channel"]: action["Timeout"]
                for action in rig.pbx_line.actions("Originate")}
    assert rung == {"Local/patient1@fake-phones/n": "10000",
                    "Local/patient2@fake-phones/n": "45000"}


async def test_a_practice_that_surveys_no_one_keeps_its_patients_off_the_in_call_survey(
        database: Database) -> None:
    """The second practice's clinic file says survey = "off": its doctor's leg tells the
    dialplan so, while the first practice's has config.toml's in-call survey."""
    await two_practices(database)
    await load_clinic(database, dataclasses.replace(
        SECOND, call_times=PracticeCallRules(survey="off")), clock=Clock(at(THURSDAY, "12:00")))
    async with line(database, await one_consultation_each(database), START,
                    plans=as_practices) as pbx_line:
        await pbx_line.until(both_bridged(database), seconds=10.0)
        survey = announced(pbx_line, "NOBAT_SURVEY")
    assert (survey["Local/doctor1@fake-phones/n"], survey["Local/doctor2@fake-phones/n"]) == (
        "in-call", "off")
