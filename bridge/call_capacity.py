"""How many more calls of each kind one nobat may ring: the trunk's channels are few, and
patient calls must leave some for consultations."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from bridge.call_routing import CallKey
from clinic.call_kinds import CallKind


@dataclass(frozen=True)
class Capacity:
    """The cap on the outbound channels held or ringing at once (so also the Originates in
    flight): two per consultation, one per patient call."""

    cap: int
    patient_calls: int = 0
    """Patient calls at once, within the cap (0: none are made)."""
    practice_share: float = 1.0
    """The part of the cap one practice's calls may hold, when several share the line."""

    @property
    def per_practice(self) -> int:
        """Channels one practice's calls may hold at once: room for a consultation and a
        patient call at least."""
        return max(CallKind.CONSULTATION.channels + CallKind.PATIENT_CALL.channels,
                   int(self.cap * self.practice_share))

    def practice_room(self, kind: CallKind, theirs: Collection[CallKey],
                      own_cap: int | None = None) -> int:
        """How many more calls of `kind` a practice whose calls in progress are `theirs`
        may start, within its share and its `own_cap` (its trunk's channels); under either,
        its patient calls always leave it room for one consultation."""
        limit = self.per_practice if own_cap is None else min(self.per_practice, own_cap)
        room = limit - self.channels(theirs)
        if kind is CallKind.PATIENT_CALL and (self.practice_share < 1 or own_cap is not None):
            room -= CallKind.CONSULTATION.channels
        return max(0, room // kind.channels)

    def channels(self, held: Collection[CallKey]) -> int:
        """Outbound channels the calls in progress hold or ring."""
        return sum(kind.channels for kind, _ in held)

    def free(self, held: Collection[CallKey]) -> int:
        """Channels under the cap no call holds."""
        return self.cap - self.channels(held)

    def room(self, kind: CallKind, held: Collection[CallKey]) -> int:
        """How many more calls of `kind` may start now."""
        room = self.free(held) // kind.channels
        if kind is CallKind.PATIENT_CALL:
            room = min(room, self.patient_calls - len(running(kind, held)))
        return room


def running(kind: CallKind, held: Collection[CallKey]) -> set[int]:
    """The ids of the calls of `kind` in progress."""
    return {ident for running, ident in held if running is kind}
