"""Compile the shared phone scripts (tests/fakepbx/script.py) into a real [fake-phones] context.

The fake PBX plays a `Caller` or a `Phone` in Python; a real Asterisk plays the same script as
dialplan, the way Asterisk's own test suite scripts its callers: each person is an extension in
[fake-phones], reached through a Local channel. Originating `Local/<exten>@fake-phones` gives
two halves: the ;2 half runs the script below (it is the person's phone), the ;1 half is the
line nobat sees (it runs nobat's dialplan, or joins nobat's bridge).

- A Caller answers, then waits, keys digits with SendDTMF (on the ;2 half, so they reach the
  IVR on ;1 as DTMF, as in the captures) and hangs up. nobat's IVR is reached by originating
  the caller into [nobat-ivr] (see `originate_caller`).
- A Phone rings, answers, talks and hangs up, or is busy, congested, never answers, rejects
  the call, or does not exist. When it answers it asserts its own identity, as a carrier trunk
  that nobat's PJSIP endpoint trusts does (P-Asserted-Identity in the 200 OK): on a Local
  channel, CONNECTEDLINE set on ;2 becomes the caller id of ;1, which is exactly what a bridge
  then shows to the other party unless nobat masks it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from bridge.ami_protocol import Action, Fields
from tests.fakepbx.script import (
    Answers,
    Busy,
    Caller,
    Congestion,
    HangUp,
    NoAnswer,
    Phone,
    Press,
    Rejects,
    Unreachable,
    Wait,
)

CONTEXT = "fake-phones"
FOREVER_SECONDS = 3600
"""How long "forever" lasts in a test: the phone waits until the other side ends the call."""

_EXTEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_NUMBER = re.compile(r"\+?[0-9*#]+")


def _seconds(value: float) -> str:
    if value < 0:
        raise ValueError(f"a wait cannot be negative: {value}")
    return f"{value:g}"


def _check_exten(exten: str) -> str:
    # A leading "_" would make a pattern, and h/i/t/s are Asterisk's special extensions.
    if not _EXTEN.fullmatch(exten) or exten in {"h", "i", "t", "s", "o", "a", "e"}:
        raise ValueError(f"not a plain extension name for [{CONTEXT}]: {exten!r}")
    return exten


def _check_number(number: str) -> str:
    if not _NUMBER.fullmatch(number):
        raise ValueError(f"not a phone number: {number!r}")
    return number


def caller_steps(caller: Caller) -> list[str]:
    """The applications a Caller's ;2 half runs, in order."""
    steps = ["Answer()"]
    for action in caller.actions:
        match action:
            case Wait(seconds=seconds):
                steps.append(f"Wait({_seconds(seconds)})")
            case Press(digits=digits):
                steps.append(f"SendDTMF({digits})")
            case HangUp(cause=cause):
                steps.append(f"Hangup({int(cause)})")
                return steps
    # A caller whose script ends without hanging up stays on the line until nobat hangs up.
    steps += [f"Wait({FOREVER_SECONDS})", "Hangup()"]
    return steps


def phone_steps(phone: Phone, *, asserts_identity: bool = True,
                reasserts_after: float | None = None) -> list[str]:
    """The applications a Phone's ;2 half runs; Unreachable has none (no such extension).

    `reasserts_after` makes an answered phone assert a changed identity (same number, new
    name) that many seconds into the call, as a re-INVITE or UPDATE with a new
    P-Asserted-Identity does.
    """
    identity = []
    if asserts_identity:
        # Set the name quietly, then the number with an update that carries both: one
        # connected-line update, like one 200 OK with P-Asserted-Identity.
        identity = [f"Set(CONNECTEDLINE(name,i)={phone.name})",
                    f"Set(CONNECTEDLINE(num)={_check_number(phone.number)})"]
    match phone.behaviour:
        case Answers(after=after, talk=talk):
            steps = ["Ringing()", f"Wait({_seconds(after)})", *identity, "Answer()"]
            if reasserts_after is not None and identity:
                # A changed identity (another handset of the same line answers): an
                # unchanged one makes no update, in PJSIP as in CONNECTEDLINE().
                steps += [f"Wait({_seconds(reasserts_after)})",
                          f"Set(CONNECTEDLINE(name,i)={phone.name} (mobile))", identity[1]]
                talk = None if talk is None else max(talk - reasserts_after, 0)
            if talk is None:
                return [*steps, f"Wait({FOREVER_SECONDS})", "Hangup()"]
            return [*steps, f"Wait({_seconds(talk)})", "Hangup()"]
        case Busy():
            return ["Busy()"]
        case NoAnswer():
            return ["Ringing()", f"Wait({FOREVER_SECONDS})", "Hangup()"]
        case Congestion():
            return ["Congestion()"]
        case Rejects(after=after):
            return ["Ringing()", f"Wait({_seconds(after)})", "Hangup(21)"]
        case Unreachable():
            return []
    raise TypeError(f"unknown phone behaviour: {phone.behaviour!r}")


def extension(exten: str, steps: Iterable[str]) -> list[str]:
    """Lay out one extension as `exten => x,1,...` and `same => n,...` lines."""
    lines = []
    for index, step in enumerate(steps):
        if "\n" in step:
            raise ValueError(f"a dialplan step cannot span lines: {step!r}")
        head = f"exten => {exten},1," if index == 0 else " same => n,"
        lines.append(head + step)
    return lines


@dataclass
class FakePhones:
    """The people in one scenario, rendered as the [fake-phones] context."""

    asserts_identity: bool = True
    reasserts_after: float | None = None
    callers: dict[str, Caller] = field(default_factory=dict)
    phones: dict[str, Phone] = field(default_factory=dict)

    def add_caller(self, caller: Caller, exten: str | None = None) -> str:
        """Add a caller and return its extension (caller1, caller2, ... unless given)."""
        exten = _check_exten(exten or f"caller{len(self.callers) + 1}")
        self._claim(exten)
        self.callers[exten] = caller
        return exten

    def add_phone(self, phone: Phone) -> str:
        """Add a phone under its own extension and return the Local dial string that rings it."""
        self._claim(_check_exten(phone.exten))
        self.phones[phone.exten] = phone
        return dial_string(phone.exten)

    def _claim(self, exten: str) -> None:
        if exten in self.callers or exten in self.phones:
            raise ValueError(f"extension {exten!r} is already in [{CONTEXT}]")

    def render(self) -> str:
        """The [fake-phones] context, ready to append to extensions.conf."""
        lines = [
            f"[{CONTEXT}]",
            "; Generated by tests/realpbx/dialplan.py from the scenario's script.",
        ]
        for exten, caller in self.callers.items():
            lines += ["", f"; caller {caller.name or ''} <{caller.number or 'anonymous'}>"]
            lines += extension(exten, caller_steps(caller))
        for exten, phone in self.phones.items():
            steps = phone_steps(phone, asserts_identity=self.asserts_identity,
                                reasserts_after=self.reasserts_after)
            lines += ["", f"; phone {phone.name} <{phone.number}>: {phone.behaviour!r}"]
            lines += extension(exten, steps) if steps else ["; (no extension: unreachable)"]
        return "\n".join(lines) + "\n"


def dial_string(exten: str) -> str:
    """The channel nobat (or a test) originates to reach a fake phone."""
    return f"Local/{exten}@{CONTEXT}"


def caller_id(number: str | None, name: str | None = None) -> str | None:
    """The CallerID header value Asterisk expects: '"Name" <number>'."""
    if number is None:
        return None
    return f'"{name}" <{number}>' if name else f"<{number}>"


def originate_caller(
    caller: Caller,
    exten: str,
    *,
    action_id: str,
    context: str = "nobat-ivr",
    channel_id: str | None = None,
) -> Action:
    """Place the caller's call into nobat's IVR, as a trunk delivering an inbound call would."""
    pairs = [
        ("Channel", dial_string(exten)),
        ("Context", context),
        ("Exten", caller.dialled or "s"),
        ("Priority", "1"),
    ]
    if (cid := caller_id(caller.number, caller.name)) is not None:
        pairs.append(("CallerID", cid))
    if channel_id is not None:
        pairs += [("ChannelId", channel_id), ("OtherChannelId", f"{channel_id}-2")]
    pairs += [("Timeout", "30000"), ("Async", "true")]
    return Action("Originate", Fields(tuple(pairs)), action_id)
