"""What the people on the phone lines do, written as data: the conditions of a scenario.

The same script drives the fake PBX and, compiled to dialplan (Wait, SendDTMF, Hangup,
Busy, ...), a real Asterisk, as Asterisk's own test suite scripts its callers.
"""

from __future__ import annotations

from dataclasses import dataclass

DIGIT_SECONDS = 0.1
"""SendDTMF's default tone length."""
BETWEEN_DIGITS_SECONDS = 0.25
"""SendDTMF's default gap between tones."""
QUIET_BEFORE_DIGITS_SECONDS = 0.1
"""SendDTMF keeps 100 ms of silence before its first tone (main/app.c dtmf_stream)."""


@dataclass(frozen=True)
class Wait:
    """The caller does nothing for a while (a prompt plays on, an input times out)."""

    seconds: float


@dataclass(frozen=True)
class Press:
    """The caller keys digits, one tone at a time, as SendDTMF sends them."""

    digits: str

    def __post_init__(self) -> None:
        if not self.digits or any(d not in "0123456789*#ABCD" for d in self.digits):
            raise ValueError(f"not DTMF digits: {self.digits!r}")


@dataclass(frozen=True)
class HangUp:
    """The caller puts the phone down."""

    cause: int = 16


@dataclass(frozen=True)
class Hear:
    """The caller waits until a prompt named `prompt` (or ending in "/prompt") starts.

    What follows counts from that moment, so long dialogues read as "at the main menu, press
    1" without timing every prompt. Only the fake PBX can do this: a real Asterisk caller
    knows nothing but time.
    """

    prompt: str


CallerAction = Wait | Press | HangUp | Hear


@dataclass(frozen=True)
class Caller:
    """Someone who calls the clinic and reaches the IVR over FastAGI; their actions start
    once the call is answered."""

    number: str | None
    actions: tuple[CallerAction, ...]
    name: str | None = None
    dialled: str | None = None
    gives_up_after: float = 120.0
    """Seconds the caller lets an unanswered call ring before hanging up."""

    @classmethod
    def dialling(cls, number: str | None, *actions: CallerAction | str,
                 dialled: str | None = None, name: str | None = None,
                 gives_up_after: float = 120.0) -> Caller:
        """Build a caller; a plain string is shorthand for Press(string)."""
        steps = tuple(Press(a) if isinstance(a, str) else a for a in actions)
        return cls(number, steps, name=name, dialled=dialled, gives_up_after=gives_up_after)


@dataclass(frozen=True)
class Answers:
    """The phone rings for `after` seconds, is answered, and hangs up after `talk` (or never)."""

    after: float = 1.0
    talk: float | None = None


@dataclass(frozen=True)
class Busy:
    """The line is busy (Busy(): cause 17 on the far half)."""


@dataclass(frozen=True)
class BusyOnTrunk:
    """The phone answers 486 Busy Here through a SIP trunk: Asterisk 22 reports the
    Originate with Reason 0, the generic failure, and the busy cause (17) only in the
    channel's HangupRequest, before, and its Hangup, after (seen on the SIP tier). It may
    ring for `after` seconds first, as a callee who declines does."""

    after: float = 0.0


@dataclass(frozen=True)
class NoAnswer:
    """It rings until the dialler gives up."""


@dataclass(frozen=True)
class Congestion:
    """The network is congested (Congestion(): cause 34 on the far half)."""


@dataclass(frozen=True)
class Rejects:
    """The callee rejects the call while it rings (Hangup(21))."""

    after: float = 1.0


@dataclass(frozen=True)
class Unreachable:
    """The number does not exist (no such extension: OriginateResponse Reason 0)."""


PhoneBehaviour = Answers | Busy | BusyOnTrunk | NoAnswer | Congestion | Rejects | Unreachable


@dataclass(frozen=True)
class Phone:
    """A phone nobat dials: its extension in the fake-phones context and what its owner does."""

    exten: str
    number: str
    behaviour: PhoneBehaviour = Answers()
    name: str = ""
    listens: tuple[CallerAction, ...] = ()
    """Once answered on a flow nobat runs over FastAGI (a reminder, a survey): the keys its
    owner presses, as a caller to the IVR would."""
