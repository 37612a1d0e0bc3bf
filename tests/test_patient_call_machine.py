"""The patient call's machine, after h11's tests: from each phase, each event gives the
effects (and the phase) the table below says; events that make no sense there give none."""

from __future__ import annotations

import datetime as dt

import pytest

from bridge.ami_protocol import Action, Event, Fields
from bridge.outbound import CallPlan, Done, Effect, Record, RecordKind, SendAction, Wake
from bridge.patient_call import LONGEST_CALL, PatientCallAttempt, Phase
from db.patient_calls import DuePatientCall, PatientCallClaim, Purpose

START = dt.datetime(2026, 11, 28, 8, 0, tzinfo=dt.UTC)
RETRY_AT = START + dt.timedelta(minutes=30)
CHANNEL = "PJSIP/trunk-00000001"
ID = "nobat-p9-a1"


def machine(phase: Phase) -> PatientCallAttempt:
    """A reminder's first attempt, brought to `phase` by the events that lead there."""
    due = DuePatientCall(9, 70, Purpose.REMINDER, "", START, START + dt.timedelta(hours=5),
                         "dialling", 1, None, START, "booked", 1, "+989351110001", "fa", False,
                         1, "021", "Clinic", "Asia/Tehran")
    claim = PatientCallClaim(due, attempt=1, instance="nobat-1",
                             lease=dt.timedelta(minutes=1), lease_until=START)
    call = PatientCallAttempt(claim, CallPlan("PJSIP/{number}@trunk", "021", "Clinic"),
                              lambda claim, now: RETRY_AT)
    call.start()
    call.on_event(event("Newchannel", Uniqueid=ID, Channel=CHANNEL), START)
    if phase is not Phase.DIALLING:
        call.on_event(answered(), START)
    if phase is Phase.OVER:
        call.on_event(event("Hangup", Uniqueid=ID, Cause="16"), START)
    assert call.phase is phase
    return call


def event(name: str, **fields: str) -> Event:
    return Event(name, Fields.of(fields))


def answered() -> Event:
    return event("OriginateResponse", ActionID=ID, Response="Success", Channel=CHANNEL)


def busy() -> Event:
    return event("OriginateResponse", ActionID=ID, Response="Failure", Reason="5")


def hangup() -> Event:
    return event("Hangup", Uniqueid=ID, Cause="16")


def far_hangup() -> Event:
    return event("Hangup", Uniqueid=f"{ID}-2", Cause="17")


def stranger() -> Event:
    return event("Hangup", Uniqueid="nobat-p8-a1", Cause="16")


def shape(effects: list[Effect]) -> list[str]:
    """Effects as short words: record kinds, action names, wake, done outcome."""
    words = []
    for effect in effects:
        if isinstance(effect, Record):
            words.append(f"record {effect.kind}")
        elif isinstance(effect, SendAction):
            words.append(f"send {effect.action.name}")
        elif isinstance(effect, Wake):
            words.append("wake")
        else:
            assert isinstance(effect, Done)
            words.append(f"done {effect.outcome}")
    return words


HANG_UP = "send Hangup"
TABLE = [
    (Phase.DIALLING, answered, ["record leg_answered", "wake"], Phase.TALKING),
    (Phase.DIALLING, busy, ["record attempt_failed", "done failed"], Phase.OVER),
    (Phase.DIALLING, hangup, ["record attempt_failed", "done failed"], Phase.OVER),
    (Phase.DIALLING, far_hangup, [], Phase.DIALLING),
    (Phase.DIALLING, stranger, [], Phase.DIALLING),
    (Phase.TALKING, answered, [], Phase.TALKING),
    (Phase.TALKING, hangup, ["record completed", "done completed"], Phase.OVER),
    (Phase.TALKING, far_hangup, [], Phase.TALKING),
    (Phase.TALKING, stranger, [], Phase.TALKING),
    (Phase.OVER, answered, [], Phase.OVER),
    (Phase.OVER, busy, [], Phase.OVER),
    (Phase.OVER, hangup, [], Phase.OVER),
]


@pytest.mark.parametrize(("phase", "make", "effects", "after"), TABLE,
                         ids=[f"{p.value}-{m.__name__}" for p, m, _, _ in TABLE])
def test_each_event_from_each_phase(phase: Phase, make, effects: list[str],
                                    after: Phase) -> None:
    call = machine(phase)
    assert shape(call.on_event(make(), START)) == effects
    assert call.phase is after


@pytest.mark.parametrize(("phase", "effects", "after"), [
    (Phase.DIALLING, [], Phase.DIALLING),
    (Phase.TALKING, [HANG_UP, "record completed", "done completed"], Phase.OVER),
    (Phase.OVER, [], Phase.OVER),
])
def test_the_longest_call_timer_from_each_phase(phase: Phase, effects: list[str],
                                                after: Phase) -> None:
    call = machine(phase)
    assert shape(call.on_time(START + LONGEST_CALL)) == effects
    assert call.phase is after


@pytest.mark.parametrize(("phase", "effects"), [
    (Phase.DIALLING, ["record attempt_failed", "done failed"]),  # no channel to hang up
    (Phase.TALKING, []),  # a refusal after the answer is moot
    (Phase.OVER, []),
])
def test_a_refused_originate_from_each_phase(phase: Phase, effects: list[str]) -> None:
    call = machine(phase)
    assert shape(call.on_refused(Action("Originate", action_id=ID), "denied", START)) == effects


def test_a_failed_attempt_says_when_to_ring_again_and_why() -> None:
    [record] = [e for e in machine(Phase.DIALLING).on_event(busy(), START)
                if isinstance(e, Record)]
    assert (record.kind, record.cause, record.retry_at) == (
        RecordKind.ATTEMPT_FAILED, "busy", RETRY_AT)
