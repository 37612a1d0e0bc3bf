"""The channel cap shared by the kinds of call: a consultation takes two channels, a patient
call one, and patient calls stop at their own max so the rest stays for consultations."""

from __future__ import annotations

from bridge.call_capacity import Capacity, running
from clinic.call_kinds import CallKind

CONSULTATION, PATIENT_CALL = CallKind.CONSULTATION, CallKind.PATIENT_CALL


def test_a_consultation_holds_two_channels_and_a_patient_call_one() -> None:
    capacity = Capacity(cap=8, patient_calls=3)
    held = [(CONSULTATION, 1), (CONSULTATION, 2), (PATIENT_CALL, 1)]
    assert capacity.channels(held) == 5
    assert capacity.free(held) == 3


def test_a_consultation_needs_two_free_channels() -> None:
    capacity = Capacity(cap=5, patient_calls=3)
    assert capacity.room(CONSULTATION, []) == 2
    assert capacity.room(CONSULTATION, [(CONSULTATION, 1), (CONSULTATION, 2)]) == 0
    assert capacity.room(PATIENT_CALL, [(CONSULTATION, 1), (CONSULTATION, 2)]) == 1


def test_patient_calls_stop_at_their_max_within_the_cap() -> None:
    capacity = Capacity(cap=10, patient_calls=3)
    assert capacity.room(PATIENT_CALL, []) == 3
    assert capacity.room(PATIENT_CALL, [(PATIENT_CALL, 7), (PATIENT_CALL, 8)]) == 1
    assert capacity.room(CONSULTATION, [(PATIENT_CALL, 7), (PATIENT_CALL, 8)]) == 4
    assert capacity.room(PATIENT_CALL, [(CONSULTATION, n) for n in range(4)]) == 2


def test_without_patient_calls_there_is_no_room_for_them() -> None:
    assert Capacity(cap=8).room(PATIENT_CALL, []) == 0


def test_the_ids_running_are_told_apart_by_kind() -> None:
    held = [(CONSULTATION, 1), (PATIENT_CALL, 1), (PATIENT_CALL, 4)]
    assert running(CONSULTATION, held) == {1}
    assert running(PATIENT_CALL, held) == {1, 4}


def test_one_practice_holds_at_most_its_share_of_the_cap_and_always_room_for_a_consultation(
        ) -> None:
    capacity = Capacity(cap=10, patient_calls=10, practice_share=0.5)
    theirs = [(CONSULTATION, 1), (PATIENT_CALL, 3)]
    assert capacity.practice_room(PATIENT_CALL, theirs) == 0
    assert capacity.practice_room(CONSULTATION, theirs) == 1
    assert capacity.practice_room(PATIENT_CALL, []) == 3
    assert capacity.practice_room(CONSULTATION, [(PATIENT_CALL, n) for n in range(3)]) == 1
    assert Capacity(cap=10, practice_share=0.01).per_practice == 3
    assert Capacity(cap=10, practice_share=0.01).practice_room(PATIENT_CALL, []) == 1


def test_a_practices_reminders_never_keep_its_consultation_waiting() -> None:
    capacity = Capacity(cap=200, patient_calls=20, practice_share=0.10)
    reminders = [(PATIENT_CALL, n) for n in range(18)]
    assert capacity.practice_room(PATIENT_CALL, reminders) == 0
    assert capacity.practice_room(CONSULTATION, reminders) == 1


def test_without_a_share_a_practice_may_use_the_whole_cap() -> None:
    theirs = [(CONSULTATION, 1), (PATIENT_CALL, 3), (PATIENT_CALL, 4)]
    assert Capacity(cap=10).practice_room(PATIENT_CALL, theirs) == 6


def test_a_practice_with_its_own_trunk_holds_at_most_its_channels() -> None:
    """[clinic] max_channels: a practice's own trunk carries that many, whatever the line's
    share; its reminders still leave room for one consultation."""
    capacity = Capacity(cap=200, patient_calls=20)
    assert capacity.practice_room(CONSULTATION, [], own_cap=4) == 2
    assert capacity.practice_room(CONSULTATION, [(CONSULTATION, 1)], own_cap=4) == 1
    assert capacity.practice_room(PATIENT_CALL, [], own_cap=4) == 2
    assert capacity.practice_room(PATIENT_CALL, [(PATIENT_CALL, 1)], own_cap=4) == 1
    assert capacity.practice_room(CONSULTATION, [(PATIENT_CALL, 1)], own_cap=4) == 1
    assert Capacity(cap=10, practice_share=0.5).practice_room(CONSULTATION, [], 40) == 2
    # a cap of its own over the line's: the line's cap holds, and the room for a consultation
    assert Capacity(cap=4, patient_calls=4).practice_room(PATIENT_CALL, [], own_cap=10) == 2
    assert Capacity(cap=4, patient_calls=4).practice_room(PATIENT_CALL, []) == 4
