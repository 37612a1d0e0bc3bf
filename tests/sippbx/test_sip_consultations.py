"""Phone consultations over the SIP trunk: nobat rings the doctor and the patient at once
through the carrier, which asserts each answering phone's own number (P-Asserted-Identity,
Remote-Party-ID), as carriers do; both are announced, bridged, warned and ended, and neither
phone is ever shown anything but the clinic.

Three consultations come due together (as at a clinic's busy hour) on one Asterisk and one
nobat: one whose phones answer at once (and whose doctor's carrier refreshes the call with a
re-INVITE mid-call), one whose doctor answers late, one whose patient is busy. At the same
time, on a second Asterisk and nobat, nobat is killed during a bridged consultation, and on
a third, Asterisk is. Each test below looks at one of these."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from clinic.call_kinds import Leg
from clinic.phones import national
from db.booking import BookingService
from db.models import Appointment, CallAttempt, Consultation
from tests.sippbx.pbx import (
    CLINIC_NAME,
    CLINIC_NUMBER,
    DID,
    LATE_MS,
    ClinicLine,
    clinic_line,
    in_order,
)
from tests.sippbx.sipp import TEST_REQUESTS, SipMessage
from tests.support.consultations import attempts, book_due, consultation, first_phone_slot

pytestmark = pytest.mark.asyncio(loop_scope="module")

TALK = dt.timedelta(seconds=85)
"""From due to the booked end: time to answer, be announced and be bridged, then more than
the minute's warning (config warn_minutes) before the end."""
CUT_TALK = TALK + dt.timedelta(seconds=60)
"""The consultation Asterisk is killed in: a minute longer, so that more than the minute nobat
needs left to ring both again (RECONNECT_AT_LEAST) remains once Asterisk is back."""
DOCTOR = "+989121002001"
CONSULTATIONS = {  # variant: (doctor, doctor's phone, patient's phone)
    "answers": ("dr-ahmadi", DOCTOR, "+989351110001"),
    "doctor late": ("dr-karimi", "+989121002180", "+989351110002"),
    "patient busy": ("dr-moradi", "+989121002003", "+989351110486"),
}
EDITS = [("grace_minutes = 2", "grace_minutes = 0"),
         ('survey = "in-call"', 'survey = "off"')]
"""The call ends at the booked end (no grace), and the patient is hung up with the doctor
(no survey on the same call)."""
IDENTITY_HEADERS = ("From", "P-Asserted-Identity", "Remote-Party-ID")
CLINIC_USERS = (CLINIC_NUMBER, DID)
"""The clinic's number as the phones may be shown it: E.164 (the caller id nobat sends), or
the trunk's account number, which the shipped pjsip.conf puts in From (from_user)."""


@dataclass
class PhoneLeg:
    """One phone of a consultation: its number, its SIP dialogue, what Asterisk played it."""

    number: str
    messages: list[SipMessage] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)
    channel: str = ""
    connected: list[str] = field(default_factory=list)
    """The connected line AMI announced for the phone's channel, update by update."""


@dataclass
class Result:
    """A consultation as the store, the phones and Asterisk's log saw it."""

    consultation: Consultation
    appointment: Appointment
    attempts: list[CallAttempt]
    legs: dict[Leg, PhoneLeg]


def dialogue(line: ClinicLine, number: str) -> list[SipMessage]:
    """Every message of the calls Asterisk placed to `number` (the dialled user part), both
    ways, as the carrier's phone saw them."""
    messages = line.carrier.messages()
    calls = {m.call_id for m in messages if m.received and m.method == "INVITE"
             and m.request_user == national(number)}
    return [m for m in messages if m.call_id in calls]


def phone_leg(line: ClinicLine, number: str, channel_ids: list[str]) -> PhoneLeg:
    """One phone of a consultation: its SIP dialogue, its channel (by the attempts'
    ChannelIds for its leg), what Asterisk played it, the connected lines AMI gave it."""
    state = PhoneLeg(number, dialogue(line, number))
    channels = [e.fields.get("Channel") or "" for e in line.events("Newchannel")
                if e.fields.get("Uniqueid") in channel_ids]
    state.channel = channels[0] if channels else ""
    state.heard = line.log.played(state.channel) if state.channel else []
    state.connected = [e.fields.get("ConnectedLineNum") or "" for e in
                       line.events("NewConnectedLine", Channel=state.channel)]
    return state


async def result_of(line: ClinicLine, appointment_id: int, row: Consultation,
                    tries: list[CallAttempt], doctor: str, patient: str) -> Result:
    """A consultation run to its end, as the store, the phones and Asterisk saw it."""
    legs = {leg: phone_leg(line, number, [t.doctor_channel_id if leg is Leg.DOCTOR
                                          else t.patient_channel_id for t in tries])
            for leg, number in ((Leg.DOCTOR, doctor), (Leg.PATIENT, patient))}
    async with line.store.reading() as session:
        appointment = await session.get(Appointment, appointment_id)
    assert appointment is not None
    return Result(row, appointment, tries, legs)


def settled(row: Consultation, tries: list[CallAttempt]) -> bool:
    """A consultation is done with: completed, or its first attempt failed."""
    return row.state == "completed" or bool(tries and tries[0].state == "failed")


async def three_at_once(folder: Path, prompts: Path
                        ) -> tuple[dict[str, Result], list[SipMessage]]:
    """The three consultations, rung together and run to their end; and the trunk's
    registration and qualify messages the carrier saw meanwhile."""
    async with clinic_line(folder, prompts, edits=EDITS, start_nobat=False) as line:
        service = BookingService(line.store)
        due = dt.datetime.now(dt.UTC)
        booked = {}
        for variant, (doctor, _, patient) in CONSULTATIONS.items():
            doctor_id, start = await first_phone_slot(service, doctor)
            booked[variant] = await book_due(service, line.store, doctor_id, patient, start,
                                             due, ends_at=due + TALK)
        await line.start_nobat()
        deadline = time.monotonic() + TALK.total_seconds() + 30
        refreshed = False
        while True:
            rows = {v: await consultation(line.store, c) for v, (_, c) in booked.items()}
            tries = {v: await attempts(line.store, c) for v, (_, c) in booked.items()}
            if not refreshed and tries["answers"] and tries["answers"][0].bridged_at:
                # Mid-call, the carrier refreshes the doctor's session with a re-INVITE that
                # asserts the doctor's number again.
                [doctor_call] = invites(PhoneLeg("", dialogue(line, DOCTOR)))
                line.carrier.notify(doctor_call.call_id)
                refreshed = True
            if all(settled(rows[v], tries[v]) for v in booked):
                break
            assert time.monotonic() < deadline, f"not settled: {rows}\n{line.logs()}"
            await asyncio.sleep(0.5)
        # Every phone still on a call gets its BYE; then nothing more happens on the line.
        await wait_all_ended(line, [n for _, d, p in CONSULTATIONS.values() for n in (d, p)])
        found = {}
        for variant, (appointment_id, _) in booked.items():
            _, doctor, patient = CONSULTATIONS[variant]
            found[variant] = await result_of(line, appointment_id, rows[variant],
                                             tries[variant], doctor, patient)
        print(identity_report(found))
        return found, [m for m in line.carrier.messages()
                       if m.cseq_method in ("REGISTER", "OPTIONS")]


@dataclass
class Killed:
    """A consultation during which nobat was killed with SIGKILL, and restarted."""

    exit_code: int
    killed_at: dt.datetime
    taken_over: Consultation
    """The consultation row when the restarted nobat had claimed it."""
    consultation: Consultation
    attempt: CallAttempt
    legs: dict[Leg, PhoneLeg]


async def bridged_now(line: ClinicLine, talk: dt.timedelta) -> int:
    """Book the "answers" consultation due now for `talk`, start nobat, and return the
    consultation's id once the call is bridged."""
    doctor_key, _, patient_phone = CONSULTATIONS["answers"]
    ident, _ = await line.book_due_now(doctor_key, patient_phone, talk)
    await line.start_nobat()
    await until(line, lambda row, tries: bool(tries) and tries[0].bridged_at is not None,
                ident, "the call bridged", within=40)
    return ident


async def nobat_killed(folder: Path, prompts: Path) -> Killed:
    """A consultation bridged, nobat killed, a new nobat started, the call run to its end."""
    _, doctor_phone, patient_phone = CONSULTATIONS["answers"]
    async with clinic_line(folder, prompts, edits=EDITS, start_nobat=False) as line:
        ident = await bridged_now(line, TALK)
        exit_code = await line.kill_nobat()
        killed_at = dt.datetime.now()
        second = await line.start_nobat()
        assert second.process is not None
        taker = f"{socket.gethostname()}-{second.process.pid}"
        taken_over = await until(line, lambda row, tries: row.claimed_by == taker, ident,
                                 "the restarted nobat taking the call over", within=75)
        done = await until(line, lambda row, tries: row.state == "completed", ident,
                           "the call completed", within=TALK.total_seconds())
        await wait_all_ended(line, [doctor_phone, patient_phone])
        [attempt] = await attempts(line.store, ident)
        legs = {leg: PhoneLeg(number, dialogue(line, number)) for leg, number in
                ((Leg.DOCTOR, doctor_phone), (Leg.PATIENT, patient_phone))}
        return Killed(exit_code, killed_at, taken_over, done, attempt, legs)


@dataclass
class Cut:
    """A consultation during which Asterisk was killed with SIGKILL, and started again."""

    killed_at: dt.datetime
    consultation: Consultation
    attempts: list[CallAttempt]
    legs: dict[Leg, PhoneLeg]
    heard: list[str]
    """What Asterisk played after it came back, on every channel."""


async def asterisk_killed(folder: Path, prompts: Path) -> Cut:
    """A consultation bridged, Asterisk killed and started again; nobat rings both again."""
    _, doctor_phone, patient_phone = CONSULTATIONS["answers"]
    async with clinic_line(folder, prompts, edits=EDITS, start_nobat=False) as line:
        ident = await bridged_now(line, CUT_TALK)
        await asyncio.sleep(6)  # they talk
        killed_at = dt.datetime.now(dt.UTC)
        await line.asterisk.kill()
        played_before = len(line.log.played())
        await line.asterisk.start()
        line.ami = await line.asterisk.connect()
        done = await until(line, lambda row, tries: row.state == "completed", ident,
                           "the call rung again and completed",
                           within=CUT_TALK.total_seconds())
        tries = await attempts(line.store, ident)
        legs = {leg: PhoneLeg(number, dialogue(line, number)) for leg, number in
                ((Leg.DOCTOR, doctor_phone), (Leg.PATIENT, patient_phone))}
        return Cut(killed_at, done, tries, legs, line.log.played()[played_before:])


@dataclass
class Runs:
    """What the module's three runs saw."""

    three: dict[str, Result]
    trunk: list[SipMessage]
    killed: Killed
    cut: Cut


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runs(tmp_path_factory: pytest.TempPathFactory, prompts: Path) -> Runs:
    """The runs at once, each on its own Asterisk, carrier and nobat (they take minutes of
    real time: the booked end, and a lease running out)."""
    done = await asyncio.gather(
        three_at_once(tmp_path_factory.mktemp("three-at-once"), prompts),
        nobat_killed(tmp_path_factory.mktemp("nobat-killed"), prompts),
        asterisk_killed(tmp_path_factory.mktemp("asterisk-killed"), prompts),
        return_exceptions=True)
    for outcome in done:
        if isinstance(outcome, BaseException):
            raise outcome
    (three, trunk), killed, cut = done
    assert isinstance(killed, Killed) and isinstance(cut, Cut)
    return Runs(three, trunk, killed, cut)


@pytest.fixture
def results(runs: Runs) -> dict[str, Result]:
    """The three consultations rung together."""
    return runs.three


async def wait_all_ended(line: ClinicLine, numbers: list[str], within: float = 30) -> None:
    """Wait until every call to these numbers that was answered has ended (BYE answered)."""
    deadline = time.monotonic() + within
    while True:
        open_calls = []
        for number in numbers:
            messages = dialogue(line, number)
            for call_id in {m.call_id for m in messages}:
                mine = [m for m in messages if m.call_id == call_id]
                answered = any(not m.received and m.status == 200 and m.cseq_method == "INVITE"
                               for m in mine)
                ended = any(m.received and m.method == "BYE" for m in mine)
                if answered and not ended:
                    open_calls.append(number)
        if not open_calls:
            return
        assert time.monotonic() < deadline, f"calls still up: {open_calls}\n{line.logs()}"
        await asyncio.sleep(0.2)


def from_asterisk(leg: PhoneLeg) -> list[SipMessage]:
    """What Asterisk sent this phone: its requests (INVITE, ACK, re-INVITE, UPDATE, BYE) and
    its responses to the phone's own requests."""
    return [m for m in leg.messages if m.received and m.method not in TEST_REQUESTS]


def identity(message: SipMessage) -> dict[str, str]:
    """The identity headers a message carries, by name."""
    return {name: value for name in IDENTITY_HEADERS
            if (value := message.header(name)) is not None}


def identity_report(results: dict[str, Result]) -> str:
    """Every identity header each phone was sent, message by message (printed for the log)."""
    lines = []
    for variant, result in results.items():
        for leg, state in result.legs.items():
            lines.append(f"{variant} / {leg} ({state.number}):")
            for message in from_asterisk(state):
                shown = "; ".join(f"{k}: {v}" for k, v in identity(message).items())
                lines.append(f"  {message.start_line.split(' SIP/')[0]:<40} {shown}")
    return "\n".join(lines)


def assert_shows_only_the_clinic(leg: PhoneLeg, others: list[str],
                                 users: tuple[str, ...] = CLINIC_USERS,
                                 name: str = CLINIC_NAME) -> None:
    """Every message Asterisk sent the phone names the clinic (on a platform, the call's
    practice: `users`, `name`) in From, P-Asserted-Identity, Remote-Party-ID and their
    display names, and no other party's number appears anywhere."""
    sent = from_asterisk(leg)
    assert sent, f"{leg.number} got nothing from Asterisk"
    for message in sent:
        shown = identity(message)
        if message.method is None:  # a response: its From is the phone's own request's
            shown.pop("From", None)
        for header, value in shown.items():
            display, user = _party(value)
            assert display in ("", name) and user in users, (header, message)
        text = str(message)
        for other in others:
            for form in (other, national(other), other.removeprefix("+98")):
                assert form not in text, (other, message)
    invite = next(m for m in sent if m.method == "INVITE")
    assert {"From", "P-Asserted-Identity"} <= set(identity(invite)), invite
    # Nor did Asterisk ever take another party's number for this phone's connected line.
    assert set(leg.connected) <= {*users, "<unknown>"}, leg.connected


def _party(value: str | None) -> tuple[str, str]:
    """('display name', 'user') of a From / PAI / RPID value."""
    match = re.match(r'\s*(?:"([^"]*)"\s*)?<sips?:([^@;>]+)', value or "")
    assert match is not None, value
    return match.group(1) or "", match.group(2)


def invites(leg: PhoneLeg) -> list[SipMessage]:
    """The calls Asterisk placed to this phone (initial INVITEs, not re-INVITEs)."""
    return [m for m in leg.messages if m.received and m.method == "INVITE"
            and "tag=" not in (m.header("To") or "")]


def final_answer(leg: PhoneLeg) -> int:
    """The phone's final answer to Asterisk's INVITE (200, 486, ...)."""
    return next(m.status for m in leg.messages if not m.received and m.status
                and m.status >= 200 and m.cseq_method == "INVITE")


def others_of(result: Result, leg: Leg) -> list[str]:
    """Every number the phone must not see: the other party's, and every other phone's."""
    return [n for _, d, p in CONSULTATIONS.values() for n in (d, p)
            if n != result.legs[leg].number]


def assert_only_the_clinic_shown(result: Result) -> None:
    """Neither phone of the consultation was shown anyone but the clinic."""
    for leg in Leg:
        assert_shows_only_the_clinic(result.legs[leg], others_of(result, leg))


def assert_completed_at_the_booked_end(result: Result, doctor: str) -> None:
    """Completed in the store; the patient heard who calls and with which doctor, and both
    heard the warning and the time-up prompt."""
    assert (result.consultation.state, result.appointment.status) == ("completed",
                                                                      "completed")
    heard = {leg: result.legs[leg].heard for leg in Leg}
    assert in_order(heard[Leg.PATIENT], ["fa/consult/patient-intro", f"fa/doctor/{doctor}",
                                         "fa/consult/is-starting", "fa/consult/ending-soon",
                                         "fa/consult/time-up"]), heard[Leg.PATIENT]
    assert in_order(heard[Leg.DOCTOR], ["fa/consult/doctor-intro", "fa/consult/ending-soon",
                                        "fa/consult/time-up"]), heard[Leg.DOCTOR]


async def test_both_phones_ring_at_once_are_announced_bridged_warned_and_ended(
        results: dict[str, Result]) -> None:
    result = results["answers"]
    doctor, patient = result.legs[Leg.DOCTOR], result.legs[Leg.PATIENT]
    [attempt] = result.attempts
    assert_completed_at_the_booked_end(result, "dr-ahmadi")
    assert attempt.bridged_at is not None and attempt.talk_seconds
    [to_doctor], [to_patient] = invites(doctor), invites(patient)
    assert abs((to_doctor.at - to_patient.at).total_seconds()) < 1.0
    assert final_answer(doctor) == final_answer(patient) == 200
    for leg in (doctor, patient):  # ended by Asterisk at the booked time
        assert [m.method for m in from_asterisk(leg)][-1] == "BYE"
    # The carrier's re-INVITE on the doctor's side, asserting the doctor's number, was
    # answered, and nothing of it went to the patient: only the call's INVITE, ACK and BYE.
    refresh = [m for m in doctor.messages if not m.received and m.method == "INVITE"]
    assert refresh and any(m.status == 200 and m.header("CSeq") == "101 INVITE"
                           for m in from_asterisk(doctor)), doctor.messages
    assert [m.method for m in from_asterisk(patient)] == ["INVITE", "ACK", "BYE"]
    assert_only_the_clinic_shown(result)


async def test_a_doctor_answering_late_is_bridged_with_the_waiting_patient(
        results: dict[str, Result]) -> None:
    result = results["doctor late"]
    doctor, patient = result.legs[Leg.DOCTOR], result.legs[Leg.PATIENT]
    [attempt] = result.attempts
    assert_completed_at_the_booked_end(result, "dr-karimi")
    assert attempt.doctor_answered_at and attempt.patient_answered_at
    waited = attempt.doctor_answered_at - attempt.patient_answered_at
    assert waited >= dt.timedelta(milliseconds=LATE_MS - 1500), waited
    # Rung once each: the patient waited on the line, nobody was rung again.
    assert len(invites(doctor)) == len(invites(patient)) == 1
    assert any(not m.received and m.status == 180 for m in doctor.messages)
    assert_only_the_clinic_shown(result)


async def test_a_busy_patient_ends_the_attempt_and_is_recorded_as_busy(
        results: dict[str, Result]) -> None:
    result = results["patient busy"]
    doctor, patient = result.legs[Leg.DOCTOR], result.legs[Leg.PATIENT]
    [attempt] = result.attempts
    assert final_answer(patient) == 486 and patient.heard == []
    assert (attempt.state, attempt.bridged_at) == ("failed", None)
    # No other try fits in this short booked time (config retry_minutes = 2), so the visit
    # is missed, with the reason staff read on the status page.
    assert result.appointment.status == "missed"
    assert (result.consultation.state, result.consultation.cause) == ("missed",
                                                                      "patient: busy")
    assert [m.method for m in from_asterisk(doctor)][-1] == "BYE"
    assert_only_the_clinic_shown(result)


async def test_the_doctor_who_answered_hears_why_the_busy_patient_is_not_joining(
        results: dict[str, Result]) -> None:
    doctor = results["patient busy"].legs[Leg.DOCTOR]
    assert final_answer(doctor) == 200
    # The doctor picked up: they hear who calls, then that the patient cannot be reached
    # (the last try), before the clinic hangs up; never a line that just goes dead.
    assert in_order(doctor.heard, ["fa/consult/doctor-intro",
                                   "fa/consult/patient-unavailable-final"]), doctor.heard


async def test_a_bridged_call_outlives_a_killed_nobat_and_the_restarted_one_takes_it_over(
        runs: Runs) -> None:
    killed = runs.killed
    assert killed.exit_code == -9
    # The restarted nobat claimed the call while it was still bridged (both still talking),
    # once the dead one's lease ran out, and saw it end at the booked time.
    assert killed.taken_over.state == "bridged"
    assert killed.consultation.state == "completed"
    assert killed.attempt.talk_seconds is not None and killed.attempt.talk_seconds > 60
    numbers = [phone.number for phone in killed.legs.values()]
    for leg, phone in killed.legs.items():
        assert len(invites(phone)) == 1, f"the {leg} was rung again"
        bye = [m for m in from_asterisk(phone) if m.method == "BYE"]
        # The call went on after the kill, until Asterisk ended it at the booked time.
        assert len(bye) == 1 and bye[0].at > killed.killed_at + dt.timedelta(seconds=30), bye
        assert_shows_only_the_clinic(phone, [n for n in numbers if n != phone.number])


async def test_a_call_cut_by_an_asterisk_crash_is_recorded_cut_and_both_are_rung_again(
        runs: Runs) -> None:
    cut = runs.cut
    first, again = cut.attempts
    # Not "completed": cut, with the talk time until Asterisk died (about 6 s), not until
    # nobat noticed; one new attempt rang both again, told them why and bridged them.
    assert (first.state, first.outcome, again.outcome) == ("cut", "cut", "completed")
    assert first.bridged_at is not None and first.talk_seconds is not None
    talked = (cut.killed_at - first.bridged_at).total_seconds()
    assert talked - 2 <= first.talk_seconds <= talked + 2, (first.talk_seconds, talked)
    assert again.bridged_at is not None and again.talk_seconds
    assert (cut.consultation.state, cut.consultation.attempts) == ("completed", 2)
    assert cut.heard.count("fa/consult/reconnecting") == 2, cut.heard
    assert in_order(cut.heard, ["fa/consult/reconnecting", "fa/consult/time-up"]), cut.heard
    numbers = [phone.number for phone in cut.legs.values()]
    for leg, phone in cut.legs.items():
        assert len(invites(phone)) == 2, f"the {leg} was not rung exactly once more"
        assert_shows_only_the_clinic(phone, [n for n in numbers if n != phone.number])


async def test_the_trunk_registers_with_the_carrier_and_qualifies_it(runs: Runs) -> None:
    register = [m for m in runs.trunk if m.received and m.method == "REGISTER"]
    assert register, "the trunk never registered"
    assert _party(register[0].header("From"))[1] == DID
    assert _party(register[0].header("Contact"))[1] == DID
    answered = {m.cseq_method for m in runs.trunk if not m.received and m.status == 200}
    assert answered == {"REGISTER", "OPTIONS"}


async def until(line: ClinicLine, ready: Callable[[Consultation, list[CallAttempt]], bool],
                ident: int, what: str, within: float) -> Consultation:
    """Poll the store until the consultation and its attempts satisfy `ready`."""
    deadline = time.monotonic() + within
    while True:
        row, tries = await consultation(line.store, ident), await attempts(line.store, ident)
        if ready(row, tries):
            return row
        assert time.monotonic() < deadline, f"no {what} within {within} s\n{line.logs()}"
        await asyncio.sleep(0.25)
