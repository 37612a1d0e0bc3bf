"""The lifecycles of the store's rows: their states, and one table per row kind of the steps
that may move them.

Each state is stored as its text (the enums are `StrEnum`s, so the columns hold what they
always held). Every conditional UPDATE of a consultation or a patient call takes the states
it may leave, and the state it writes, from its kind's table: a step the table does not
allow from the row's state is refused by the database, never half applied.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar


class AppointmentStatus(enum.StrEnum):
    """Where a booking stands."""

    BOOKED = "booked"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    MISSED = "missed"


class ConsultationState(enum.StrEnum):
    """Where a phone consultation's call stands."""

    SCHEDULED = "scheduled"
    DIALLING = "dialling"
    BRIDGED = "bridged"
    COMPLETED = "completed"
    RETRY_WAIT = "retry_wait"
    MISSED = "missed"
    CANCELLED = "cancelled"


class AttemptState(enum.StrEnum):
    """Where one attempt of a consultation stands (its call_attempt row)."""

    DIALLING = "dialling"
    BRIDGED = "bridged"
    FAILED = "failed"
    COMPLETED = "completed"
    CUT = "cut"
    ABANDONED = "abandoned"


class PatientCallState(enum.StrEnum):
    """Where a call to a patient (a reminder, an absence call, a survey) stands."""

    SCHEDULED = "scheduled"
    DIALLING = "dialling"
    RETRY_WAIT = "retry_wait"
    DONE = "done"
    MISSED = "missed"
    CANCELLED = "cancelled"


S = TypeVar("S", bound=enum.StrEnum)
E = TypeVar("E", bound=enum.StrEnum)


class IllegalStep(ValueError):
    """A step its lifecycle's table does not allow from the row's state."""


@dataclass(frozen=True)
class Move(Generic[S]):
    """One step of a lifecycle: the states it may leave, and the state it writes (None:
    the state stays as it is)."""

    leaves: tuple[S, ...]
    """In the order they are named (a refused step's message lists them so)."""
    to: S | None = None


class Lifecycle(Generic[S, E]):
    """One row kind's allowed steps: the states each step may leave and where it goes."""

    def __init__(self, moves: Mapping[E, Move[S]]) -> None:
        self.moves = dict(moves)

    def leaves(self, step: E) -> tuple[S, ...]:
        """The states `step` may be taken from, for a conditional UPDATE's WHERE."""
        return self.moves[step].leaves

    def writes(self, step: E) -> dict[str, S]:
        """The state column `step` writes, if it changes the state."""
        to = self.moves[step].to
        return {} if to is None else {"state": to}

    def after(self, state: S, step: E) -> S:
        """The state after `step` from `state`; IllegalStep when the table forbids it."""
        move = self.moves[step]
        if state not in move.leaves:
            raise IllegalStep(f"{step} is not allowed from {state}")
        return state if move.to is None else move.to


def _move(leaves: Iterable[S], to: S | None = None) -> Move[S]:
    return Move(tuple(leaves), to)


C = ConsultationState
WAITING = (C.SCHEDULED, C.RETRY_WAIT)
"""Waiting for the next attempt (a patient call waits in states of the same names)."""
LIVE_CONSULTATION = (C.DIALLING, C.BRIDGED)
"""A call under way: the phones are ringing or the parties talking."""
LIVE_PATIENT_CALL = (PatientCallState.DIALLING,)
"""A call to a patient under way: ringing, or the patient on the line."""


class ConsultationStep(enum.StrEnum):
    """What may happen to a consultation."""

    CLAIM = "claim"
    """Due (or left dialling by an instance that stopped): a new attempt."""
    TAKE_OVER = "take_over"
    """An attempt whose instance stopped goes on here, as it is."""
    MISS = "miss"
    """Its time passed before it could be dialled (at start, or when claimed)."""
    KEEP = "keep"
    """The lease is renewed, handed over, or missed events are noted: the state stays."""
    ANSWER = "answer"
    BRIDGE = "bridge"
    RETRY = "retry"
    """An attempt failed, and a try is left."""
    RECONNECT = "reconnect"
    """A bridged call was cut (Asterisk or the line lost it): both are rung again."""
    GIVE_UP = "give_up"
    """An attempt failed with no try left."""
    COMPLETE = "complete"
    """A bridged call ended (talked through, or cut with no time left)."""
    END_AFTER_CUT = "end_after_cut"
    """Ringing them again after a cut failed: they did talk, so it is not missed."""
    GIVE_BACK = "give_back"
    """An attempt not yet bridged is given back on shutdown: due again at once."""
    RESCHEDULE = "reschedule"
    """The booking moved: the call is due at the new time, its attempts counted afresh."""
    CANCEL = "cancel"


CONSULTATION = Lifecycle[ConsultationState, ConsultationStep]({
    ConsultationStep.CLAIM: _move((*WAITING, C.DIALLING), C.DIALLING),
    ConsultationStep.TAKE_OVER: _move(LIVE_CONSULTATION),
    ConsultationStep.MISS: _move((*WAITING, C.DIALLING), C.MISSED),
    ConsultationStep.KEEP: _move(LIVE_CONSULTATION),
    ConsultationStep.ANSWER: _move((C.DIALLING,)),
    ConsultationStep.BRIDGE: _move((C.DIALLING,), C.BRIDGED),
    ConsultationStep.RETRY: _move(LIVE_CONSULTATION, C.RETRY_WAIT),
    ConsultationStep.RECONNECT: _move((C.BRIDGED,), C.RETRY_WAIT),
    ConsultationStep.GIVE_UP: _move(LIVE_CONSULTATION, C.MISSED),
    ConsultationStep.COMPLETE: _move((C.BRIDGED,), C.COMPLETED),
    ConsultationStep.END_AFTER_CUT: _move(LIVE_CONSULTATION, C.COMPLETED),
    ConsultationStep.GIVE_BACK: _move((C.DIALLING,), C.RETRY_WAIT),
    ConsultationStep.RESCHEDULE: _move(WAITING, C.SCHEDULED),
    ConsultationStep.CANCEL: _move(WAITING, C.CANCELLED),
})

P = PatientCallState


class PatientCallStep(enum.StrEnum):
    """What may happen to a call to a patient."""

    CLAIM = "claim"
    DROP = "drop"
    """Claimed, but its reason is gone (booking moved, patient opted out...): never rung."""
    CLOSE = "close"
    """Claimed, but it was answered when its instance stopped: it is done."""
    KEEP = "keep"
    """The lease is renewed or the answer recorded: the state stays."""
    RETRY = "retry"
    GIVE_UP = "give_up"
    FINISH = "finish"
    GIVE_BACK = "give_back"
    OPT_OUT = "opt_out"
    """The patient asked for no more calls: those planned are dropped."""
    HOLD_OVER = "hold_over"
    """Claimed, but its practice's quiet hours began before it was rung: given back unrung,
    due at their end (never rung at night because it waited behind the cap)."""


PATIENT_CALL = Lifecycle[PatientCallState, PatientCallStep]({
    PatientCallStep.CLAIM: _move((P.SCHEDULED, P.RETRY_WAIT, P.DIALLING), P.DIALLING),
    PatientCallStep.DROP: _move((P.DIALLING,), P.CANCELLED),
    PatientCallStep.CLOSE: _move((P.DIALLING,), P.DONE),
    PatientCallStep.KEEP: _move((P.DIALLING,)),
    PatientCallStep.RETRY: _move((P.DIALLING,), P.RETRY_WAIT),
    PatientCallStep.GIVE_UP: _move((P.DIALLING,), P.MISSED),
    PatientCallStep.FINISH: _move((P.DIALLING,), P.DONE),
    PatientCallStep.GIVE_BACK: _move((P.DIALLING,), P.RETRY_WAIT),
    PatientCallStep.OPT_OUT: _move((P.SCHEDULED, P.RETRY_WAIT), P.CANCELLED),
    PatientCallStep.HOLD_OVER: _move((P.DIALLING,), P.SCHEDULED),
})
