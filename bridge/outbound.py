"""What every outbound call speaks, whatever its kind: the effects its machine returns, the
plan it is dialled by, the Originate and Hangup it sends and the tables of why a leg failed.

`ConsultationCall` (two legs, bridged) and `PatientCallAttempt` (one leg, a flow over
FastAGI) are both `OutboundCall`s: the dialer runs them alike under one cap, carrying out
their effects in order, so every state change is written before the next action goes out.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from bridge.ami_protocol import Action, Event, Fields, variables
from bridge.live_channels import Live
from clinic.call_kinds import Leg, far_half
from db.leases import LeasedClaim

RELEASE_CAUSE = "16"
"""Normal Clearing: how nobat ends a leg it no longer needs."""

FAILURE_BY_REASON: dict[int, str] = {
    0: "unreachable", 1: "rejected", 3: "no_answer", 5: "busy", 8: "congestion"}
"""OriginateResponse Reason (Asterisk's control frame) -> why the leg failed (captures b, e)."""

FAILURE_BY_CAUSE: dict[int, str] = {
    0: "unreachable", 1: "unreachable", 17: "busy", 18: "no_answer", 19: "no_answer",
    21: "rejected", 34: "congestion"}
"""Hangup cause -> why the leg failed, adhearsion's table, for a leg whose Hangup comes before
its OriginateResponse (the order of events is not fixed)."""


def originate_failure(reason: int, cause: int | None) -> str:
    """Why an Originate failed. On a SIP trunk Asterisk 22 answers a busy or rejecting
    phone with Reason 0, the generic failure, and names the cause only in the channel's
    HangupRequest and Hangup (SIP tier): a cause seen by then says more than Reason 0."""
    if reason == 0 and cause:
        return FAILURE_BY_CAUSE.get(cause, f"cause_{cause}")
    return FAILURE_BY_REASON.get(reason, f"reason_{reason}")


class RecordKind(enum.StrEnum):
    """The store step a `Record` asks for."""

    LEG_ANSWERED = "leg_answered"
    BRIDGED = "bridged"
    ATTEMPT_FAILED = "attempt_failed"
    COMPLETED = "completed"
    CUT = "cut"
    RESUMED = "resumed"
    """Events were missed (a lost AMI link, a takeover) and the attempt goes on from what
    Asterisk's channels say."""
    GIVEN_BACK = "given_back"
    """Taken over with no leg left in Asterisk and none known answered: due again at once."""


@dataclass(frozen=True)
class SendAction:
    """Send this action to Asterisk (after every earlier effect was carried out)."""

    action: Action


@dataclass(frozen=True)
class Record:
    """Write this step to the store before anything that follows it."""

    kind: RecordKind
    at: dt.datetime
    leg: Leg | None = None
    cause: str | None = None
    leg_causes: Mapping[Leg, int | None] = field(default_factory=dict)
    """For a failed attempt: the hang-up cause of each leg, where one is known."""
    talk_seconds: int | None = None
    """For a completed call: None when it ended while no nobat watched it."""
    retry_at: dt.datetime | None = None
    """For a failed attempt: when to try again, None when no try is left."""
    unseen_seconds: int | None = None
    """For a resumed attempt: how long no event of it was seen."""


@dataclass(frozen=True)
class Wake:
    """Call `on_time` at `at` (the booked end plus grace)."""

    at: dt.datetime


@dataclass(frozen=True)
class Done:
    """The attempt is over: stop listening; `outcome` is "completed", "failed" or "released"."""

    outcome: str


Effect = SendAction | Record | Wake | Done


class OutboundCall(Protocol):
    """What the dialer drives: ConsultationCall and PatientCallAttempt alike."""

    @property
    def over(self) -> bool: ...
    @property
    def channel_ids(self) -> frozenset[str]: ...
    def start(self) -> list[Effect]: ...
    def resume(self, live: Live | None, now: dt.datetime, since: dt.datetime
               ) -> list[Effect]: ...
    def on_event(self, evt: Event, now: dt.datetime) -> list[Effect]: ...
    def on_time(self, now: dt.datetime) -> list[Effect]: ...
    def on_refused(self, action: Action, message: str, now: dt.datetime) -> list[Effect]: ...
    def on_resync(self, live: Live | None, now: dt.datetime, since: dt.datetime,
                  restarted: bool = False) -> list[Effect]: ...
    def release(self, live: Live | None = None) -> list[Effect]: ...


def by_number(number: str) -> Mapping[str, str]:
    """The default address: the dial-string template takes the phone number as it is."""
    return {"number": number}


def asterisk_sounds(lang: str, key: str) -> str:
    """The default place of a prompt: copied under Asterisk's sounds folder as nobat/."""
    return f"nobat/{lang}/{key}"


@dataclass(frozen=True)
class CallPlan:
    """How this clinic's calls are dialled (from config): trunk, identity, timing."""

    dial_template: str
    """e.g. "PJSIP/{number}@trunk" or "Local/{exten}@fake-phones"."""
    clinic_number: str
    clinic_name: str
    ring_seconds: float = 45.0
    grace: dt.timedelta = dt.timedelta(minutes=2)
    """How long a bridged call may run past its booked end before it is ended."""
    warn_before: dt.timedelta = dt.timedelta(minutes=1)
    """When, before the booked end, both parties hear that time is almost up (0: never)."""
    address: Callable[[str], Mapping[str, str]] = by_number
    """Maps a party's phone number to the fields `dial_template` names."""
    prompt_file: Callable[[str, str], str] = asterisk_sounds
    """Where Asterisk finds a prompt, by language and key (PromptLibrary.file)."""
    survey_in_call: bool = False
    """When the doctor hangs up or the time is up, the patient stays on the line for the
    survey ([nobat-consult-survey]) instead of being hung up."""
    call_token: Callable[[str], str] = lambda channel_id: ""
    """The token a leg's AGI request must bring back (protocol/call_token.py), by ChannelId."""

    def dial_string(self, number: str) -> str:
        """Where to ring `number` through this clinic's trunk."""
        return self.dial_template.format_map(self.address(number))

    def originate(self, number: str, context: str, channel_id: str,
                  settings: Mapping[str, str]) -> Action:
        """Ring `number` as the clinic, into `context` of nobat's dialplan once answered; the
        channel is `channel_id` (its far half `channel_id`-2), and its ActionID too, so the
        OriginateResponse finds its call."""
        return Action("Originate", Fields.of(
            [("Channel", self.dial_string(number)), ("Context", context),
             ("Exten", "s"), ("Priority", "1"),
             ("CallerID", f'"{self.clinic_name}" <{self.clinic_number}>'),
             ("Timeout", str(int(self.ring_seconds * 1000))),
             ("ChannelId", channel_id), ("OtherChannelId", far_half(channel_id)),
             *variables(settings),
             ("Async", "true")]), action_id=channel_id)


PlanFactory = Callable[[LeasedClaim], CallPlan]
"""The plan a claimed call is dialled by: its own practice's, in platform mode."""


def hangup(channel: str) -> Action:
    """End a channel nobat no longer needs."""
    return Action("Hangup", Fields.of(Channel=channel, Cause=RELEASE_CAUSE))
