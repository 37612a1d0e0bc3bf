"""A call nobat makes to a patient, on a real Asterisk 22: the Originate nobat's dialer
builds (bridge/patient_call.py) lands the answered phone in [nobat-patient-call], whose AGI
reaches the FastAGI server with the call's ChannelId as its Uniqueid (how nobat finds the
call) and the patient's language; a transfer nobat asks for rings the office, and the
patient's phone is shown the clinic, never the office's own number."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from bridge.ami_protocol import Event
from bridge.outbound import CallPlan, SendAction
from bridge.patient_call import PatientCallAttempt
from db.patient_calls import DuePatientCall, PatientCallClaim, Purpose
from tests.fakepbx.script import Answers, Phone
from tests.realpbx.asterisk import RealAsterisk
from tests.realpbx.dialplan import FakePhones, dial_string
from tests.realpbx.test_real_agi import OFFICE, FastAgiServer, office_dialled, send

PATIENT = Phone("patient", "15557770002", Answers(after=1.0), name="Patient")
CLINIC_NUMBER, CLINIC_NAME = "15550001000", "Clinic"


def reminder_originate() -> SendAction:
    """What nobat's dialer sends to ring the patient for reminder call 7, attempt 1."""
    start = dt.datetime(2026, 11, 28, 6, 30, tzinfo=dt.UTC)
    due = DuePatientCall(7, 70, Purpose.REMINDER, "", start, start, "dialling", 1, None,
                         start, "booked", 1, PATIENT.number, "fa", False, 1, CLINIC_NUMBER,
                         CLINIC_NAME, "Asia/Tehran")
    claim = PatientCallClaim(due, attempt=1, instance="nobat-1",
                             lease=dt.timedelta(minutes=1), lease_until=start)
    plan = CallPlan("Local/{exten}@fake-phones", CLINIC_NUMBER, CLINIC_NAME, ring_seconds=20,
                    address=lambda number: {"exten": PATIENT.exten})
    [originate] = PatientCallAttempt(claim, plan, lambda claim, now: None).start()
    assert isinstance(originate, SendAction)
    return originate


def identities_shown(events: list[Event], exten: str) -> set[str]:
    """Every number a phone's own half (;2) is shown as its caller or its connected line."""
    return {e.fields.get(key) or "" for e in events for key in ("CallerIDNum", "ConnectedLineNum")
            if re.match(rf"Local/{exten}@fake-phones-[0-9a-f]+;2$",
                        e.fields.get("Channel") or "")}


async def test_a_reminder_reaches_fastagi_by_its_channel_id_and_can_ring_the_office(
        asterisk_binary: Path) -> None:
    phones = FakePhones()
    phones.add_phone(PATIENT)
    phones.add_phone(OFFICE)
    script = [send("SET VARIABLE", "NOBAT_SESSION", "s-7"), send("STREAM FILE", "beep", ""),
              send("SET VARIABLE", "NOBAT_TRANSFER", dial_string(OFFICE.exten))]
    async with FastAgiServer(script) as server:
        pbx = RealAsterisk(phones=phones, binary=asterisk_binary,
                           globals={"NOBAT_FASTAGI": f"127.0.0.1:{server.port}",
                                    "NOBAT_OFFICE": "Local/nobody@fake-phones"})
        async with pbx:
            ami = await pbx.connect()
            ami.send_nowait(reminder_originate().action)
            answered = await ami.wait_event("OriginateResponse", within=20,
                                            ActionID="nobat-p7-a1")
            run = await server.session()
            await ami.wait_event("Hangup", within=60, Uniqueid="nobat-p7-a1")
            events = ami.events()
    assert answered.fields["Response"] == "Success"
    assert answered.fields["Uniqueid"] == "nobat-p7-a1"
    env = run.environment
    assert env is not None
    assert (env.script, env.query) == ("patient-call", {"lang": "fa"})
    assert env.uniqueid == "nobat-p7-a1" and env.context == "nobat-patient-call"
    replies = [raw for _, raw in run.replies()]
    assert replies[0] == replies[2] == "200 result=1"
    assert re.fullmatch(r"200 result=0 endpos=\d+", replies[1]), replies
    assert office_dialled(events)
    # The phone is shown the clinic, also once the office answers, never the office's number
    # (the other number there is the phone's own, asserted as it answers). Without
    # CONNECTED_LINE_SEND_SUB in [nobat-patient-call] the office's number reaches it.
    shown = identities_shown(events, PATIENT.exten)
    assert CLINIC_NUMBER in shown and OFFICE.number not in shown
