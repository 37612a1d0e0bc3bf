"""Every (state, step) of the stored lifecycles, after h11's state-machine tests: each legal
step lands where the table below says, every other one is refused."""

from __future__ import annotations

import pytest

from db.lifecycles import (
    CONSULTATION,
    PATIENT_CALL,
    ConsultationState,
    ConsultationStep,
    IllegalStep,
    Lifecycle,
    PatientCallState,
    PatientCallStep,
)

C, CS = ConsultationState, ConsultationStep
P, PS = PatientCallState, PatientCallStep

CONSULTATION_EXPECTED = {
    (C.SCHEDULED, CS.CLAIM): C.DIALLING,
    (C.RETRY_WAIT, CS.CLAIM): C.DIALLING,
    (C.DIALLING, CS.CLAIM): C.DIALLING,  # its instance stopped: a new attempt
    (C.DIALLING, CS.TAKE_OVER): C.DIALLING,
    (C.BRIDGED, CS.TAKE_OVER): C.BRIDGED,
    (C.SCHEDULED, CS.MISS): C.MISSED,
    (C.RETRY_WAIT, CS.MISS): C.MISSED,
    (C.DIALLING, CS.MISS): C.MISSED,
    (C.DIALLING, CS.KEEP): C.DIALLING,
    (C.BRIDGED, CS.KEEP): C.BRIDGED,
    (C.DIALLING, CS.ANSWER): C.DIALLING,
    (C.DIALLING, CS.BRIDGE): C.BRIDGED,
    (C.DIALLING, CS.RETRY): C.RETRY_WAIT,
    (C.BRIDGED, CS.RETRY): C.RETRY_WAIT,
    (C.BRIDGED, CS.RECONNECT): C.RETRY_WAIT,
    (C.DIALLING, CS.GIVE_UP): C.MISSED,
    (C.BRIDGED, CS.GIVE_UP): C.MISSED,
    (C.BRIDGED, CS.COMPLETE): C.COMPLETED,
    (C.DIALLING, CS.END_AFTER_CUT): C.COMPLETED,
    (C.BRIDGED, CS.END_AFTER_CUT): C.COMPLETED,
    (C.DIALLING, CS.GIVE_BACK): C.RETRY_WAIT,
    (C.SCHEDULED, CS.RESCHEDULE): C.SCHEDULED,
    (C.RETRY_WAIT, CS.RESCHEDULE): C.SCHEDULED,
    (C.SCHEDULED, CS.CANCEL): C.CANCELLED,
    (C.RETRY_WAIT, CS.CANCEL): C.CANCELLED,
}

PATIENT_CALL_EXPECTED = {
    (P.SCHEDULED, PS.CLAIM): P.DIALLING,
    (P.RETRY_WAIT, PS.CLAIM): P.DIALLING,
    (P.DIALLING, PS.CLAIM): P.DIALLING,
    (P.DIALLING, PS.DROP): P.CANCELLED,
    (P.DIALLING, PS.CLOSE): P.DONE,
    (P.DIALLING, PS.KEEP): P.DIALLING,
    (P.DIALLING, PS.RETRY): P.RETRY_WAIT,
    (P.DIALLING, PS.GIVE_UP): P.MISSED,
    (P.DIALLING, PS.FINISH): P.DONE,
    (P.DIALLING, PS.GIVE_BACK): P.RETRY_WAIT,
    (P.SCHEDULED, PS.OPT_OUT): P.CANCELLED,
    (P.RETRY_WAIT, PS.OPT_OUT): P.CANCELLED,
    (P.DIALLING, PS.HOLD_OVER): P.SCHEDULED,
}


def every_pair(lifecycle: Lifecycle, states: type, steps: type, expected: dict) -> list:
    return [(lifecycle, state, step, expected.get((state, step)))
            for state in states for step in steps]


@pytest.mark.parametrize(
    ("lifecycle", "state", "step", "after"),
    every_pair(CONSULTATION, ConsultationState, ConsultationStep, CONSULTATION_EXPECTED)
    + every_pair(PATIENT_CALL, PatientCallState, PatientCallStep, PATIENT_CALL_EXPECTED))
def test_each_step_from_each_state(lifecycle: Lifecycle, state, step, after) -> None:
    if after is None:
        with pytest.raises(IllegalStep, match=f"{step} is not allowed from {state}"):
            lifecycle.after(state, step)
        assert state not in lifecycle.leaves(step)
    else:
        assert lifecycle.after(state, step) == after
        assert state in lifecycle.leaves(step)


def test_finished_rows_never_move() -> None:
    for state in (C.COMPLETED, C.MISSED, C.CANCELLED):
        assert not any(state in CONSULTATION.leaves(step) for step in ConsultationStep)
    for state in (P.DONE, P.MISSED, P.CANCELLED):
        assert not any(state in PATIENT_CALL.leaves(step) for step in PatientCallStep)


def test_the_states_are_stored_as_the_same_text() -> None:
    assert [str(state) for state in ConsultationState] == [
        "scheduled", "dialling", "bridged", "completed", "retry_wait", "missed", "cancelled"]
    assert [str(state) for state in PatientCallState] == [
        "scheduled", "dialling", "retry_wait", "done", "missed", "cancelled"]
