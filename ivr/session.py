"""What a flow may do to a call, whatever carries it: FastAGI, classic AGI, a script, a terminal."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

ALL_KEYS = "0123456789*#"


class CallerHungUp(Exception):
    """The caller is gone; raised from any session call, it unwinds the whole flow at once."""


@dataclass(frozen=True)
class CallInfo:
    """Who called which number, as the PBX reported it (caller id may be withheld or spoofed)."""

    caller_id: str | None
    dialled: str | None
    channel: str
    unique_id: str
    entry: str = "ivr"
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """Digits a caller keyed: ended by '#', by '*' (go back), by the length, or by silence."""

    digits: str
    timed_out: bool = False
    back: bool = False


class CallSession(abc.ABC):
    """The few things a flow does to a call; each carrier implements the primitives."""

    info: CallInfo

    @abc.abstractmethod
    async def play(self, prompts: Sequence[str], keys: str = ALL_KEYS) -> str | None:
        """Play prompts in order; a key in `keys` stops them and is returned (barge-in)."""

    @abc.abstractmethod
    async def wait_digit(self, seconds: float) -> str | None:
        """Wait up to `seconds` for one key (the PBX times it); None if none came."""

    async def ask(self, prompts: Sequence[str], seconds: float) -> str | None:
        """Play prompts (any key stops them), then wait up to `seconds` for a key: a menu."""
        key = await self.play(prompts)
        return key if key is not None else await self.wait_digit(seconds)

    @abc.abstractmethod
    async def transfer(self, destination: str) -> None:
        """Hand the call to another endpoint (the office); the flow ends after this."""

    @abc.abstractmethod
    async def hang_up(self) -> None:
        """End the call from our side."""

    @abc.abstractmethod
    async def begin(self, call_id: int) -> None:
        """Take the call: answer it if the PBX has not, and tell the carrier nobat has it
        (the dialplan falls back otherwise)."""

    @abc.abstractmethod
    async def finish(self) -> None:
        """Tell the carrier the flow is done with the caller, so nothing else takes over."""

    async def read_digits(self, prompts: Sequence[str], *, max_digits: int, digit_wait: float,
                          first_wait: float | None = None) -> Entry:
        """Play prompts, then collect up to `max_digits` keys: '#' ends, '*' means go back."""
        digits = ""
        key = await self.play(prompts)
        wait = digit_wait if first_wait is None else first_wait
        while True:
            if key is None:
                key = await self.wait_digit(wait)
                if key is None:
                    return Entry(digits, timed_out=True)
            if key == "#":
                return Entry(digits)
            if key == "*":
                return Entry(digits, back=True)
            digits += key
            if len(digits) >= max_digits:
                return Entry(digits)
            key, wait = None, digit_wait
