"""The kinds of call nobat makes, and the ChannelIds that name each attempt's channels.

A ChannelId is derived, never random: the store writes it before anything is dialled, the
dialer routes Asterisk's events by it, a takeover finds the legs of an attempt by it, and the
FastAGI door checks a patient call's token against it. Its text is a contract with the
dialplan and with live calls, so it never changes:

    nobat-c12-a1-doctor, nobat-c12-a1-patient   a consultation's two legs (attempt 1)
    nobat-p7-a2                                 a call to a patient (attempt 2)

Each originated channel's far (phone) half carries the same id with "-2" appended.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class Leg(enum.StrEnum):
    """The two parties of a consultation; each is rung on an outbound channel of its own."""

    DOCTOR = "doctor"
    PATIENT = "patient"


class CallKind(enum.StrEnum):
    """What a call is about; its value is the letter its ChannelIds carry."""

    CONSULTATION = "c"
    """A doctor and a patient rung at once and bridged: two legs."""
    PATIENT_CALL = "p"
    """A reminder, absence call or survey: one leg, the patient's."""

    @property
    def channels(self) -> int:
        """Outbound channels one attempt of this kind rings (what the dialer's cap counts)."""
        return 2 if self is CallKind.CONSULTATION else 1

    def channel_id(self, ident: int, attempt: int, leg: Leg | None = None) -> str:
        """The ChannelId of one leg of one attempt."""
        return CallRef(self, ident, attempt, leg).channel_id


@dataclass(frozen=True)
class CallRef:
    """What a ChannelId (or an ActionID or Uniqueid made from one) names."""

    kind: CallKind
    ident: int
    attempt: int
    leg: Leg | None = None

    @property
    def channel_id(self) -> str:
        """The text Asterisk knows the channel by."""
        suffix = "" if self.leg is None else f"-{self.leg}"
        return f"nobat-{self.kind}{self.ident}-a{self.attempt}{suffix}"


def far_half(channel_id: str) -> str:
    """The ChannelId of an originated channel's far (phone) half."""
    return f"{channel_id}-2"


_CHANNEL_ID = re.compile(r"nobat-(?:c(\d+)-a(\d+)-(doctor|patient)|p(\d+)-a(\d+))")


def call_ref(text: str | None) -> CallRef | None:
    """The call a ChannelId names, also from its far half ("-2") or an ActionID made from
    it; None for anything else."""
    match = _CHANNEL_ID.match(text or "")
    if match is None:
        return None
    consultation, attempt, leg, patient_call, call_attempt = match.groups()
    if consultation is not None:
        return CallRef(CallKind.CONSULTATION, int(consultation), int(attempt), Leg(leg))
    return CallRef(CallKind.PATIENT_CALL, int(patient_call), int(call_attempt))


def call_of(text: str | None) -> tuple[CallKind, int] | None:
    """Just the kind and id of the call a ChannelId names: what routes every AMI event, so
    it builds nothing else."""
    match = _CHANNEL_ID.match(text or "")
    if match is None:
        return None
    consultation, _, _, patient_call, _ = match.groups()
    if consultation is not None:
        return CallKind.CONSULTATION, int(consultation)
    return CallKind.PATIENT_CALL, int(patient_call)
