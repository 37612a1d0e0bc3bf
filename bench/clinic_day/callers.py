"""Who calls when, and what they do: the day's shape and each caller's keys."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple

from tests.fakepbx.agi_caller import CallTranscript, Exchange
from tests.fakepbx.script import (
    CallerAction,
    HangUp,
    Hear,
    Wait,
)

CALL_WEIGHTS = (9, 2, 0.5, 0.3, 0.3, 0.3, 0.5, 2, 5, 8, 10, 10, 9, 7, 5, 5, 5, 5, 4, 3, 2, 1.5,
                1.2, 1)
"""Inbound calls per hour of the day, relative: the midnight rush, then the 10-12 peak."""


MIDNIGHT_RUSH_SECONDS = 600.0
"""Hour 0's callers arrive at a rate decaying from 00:00 with this time constant: the next
day's slots open at midnight and the race for them is over within minutes."""


CONSULTATION_WEIGHTS = (0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 1, 2, 3, 4, 6, 6, 5, 3, 2, 1, 0, 0)
"""Consultations due per hour, relative: through the afternoon, peaking 16-18."""


CONFIRM_KEY = str(ord("1"))
"""The result Asterisk gives a prompt that the confirming key "1" interrupted."""


def arrivals(rng: random.Random, count: int, weights: Sequence[float],
             rush: float | None = None) -> list[float]:
    """`count` simulated seconds spread over the day by hourly `weights`, sorted; with `rush`,
    hour 0's decay from midnight with that time constant instead of spreading evenly."""
    hours = rng.choices(range(24), weights=weights, k=count)
    return sorted(hour * 3600 + _within_hour(rng, rush if hour == 0 else None)
                  for hour in hours)


def _within_hour(rng: random.Random, rush: float | None) -> float:
    """A second within the hour: even, or exponential from its start (redrawn past its end)."""
    if rush is None:
        return rng.random() * 3600
    while (second := rng.expovariate(1 / rush)) >= 3600:
        pass
    return second


Steps = tuple[CallerAction | str, ...]


BOOK: Steps = (
    Hear("main-menu"), "1", Hear("choose-specialty"), "1", Hear("choose-day"), "1",
    Hear("choose-time"), "1", Hear("confirm-keys"), "1", Hear("anything-else"), "9")


class Booking(NamedTuple):
    """A booking a caller heard confirmed: their number, its code, the number they dialled."""

    number: str
    code: str
    dialled: str | None


class Script(NamedTuple):
    """One caller: their kind of call, number, keys and the practice number they dial."""

    kind: str
    number: str
    steps: Steps
    dialled: str | None


def script(rng: random.Random, booked: list[Booking], numbers: Sequence[str | None]
           ) -> Script:
    """A caller's number and what they do, by the day's mix; `booked` holds each booking
    callers heard confirmed. A cancelled booking is not cancelled or moved again; changing
    one takes its code and the number it was booked on, as it takes a real caller. A new
    caller dials one of the practices' `numbers` (with one, no draw is made: the one
    practice's day is the same whatever the count)."""
    roll = rng.random()
    if booked and roll < 0.10:
        number, code, dialled = booked.pop(rng.randrange(len(booked)))
        return Script("cancel", number, (
            Hear("main-menu"), "2", Hear("enter-code"), code, Hear("cancel-it"), "1",
            Hear("confirm-keys"), "1", Hear("anything-else"), "9"), dialled)
    if booked and roll < 0.18:
        number, code, dialled = rng.choice(booked)
        return Script("move", number, (
            Hear("main-menu"), "2", Hear("enter-code"), code, Hear("move-it"), "2",
            Hear("choose-day"), "1", Hear("choose-time"), "1", Hear("confirm-keys"), "1",
            Hear("anything-else"), "9"), dialled)
    number = f"0912{rng.randrange(10_000_000):07d}"
    dialled = numbers[0] if len(numbers) == 1 else rng.choice(numbers)
    if roll < 0.55:
        return Script("book", number, BOOK, dialled)
    if roll < 0.68:
        return Script("hours", number, (Hear("main-menu"), "4", Hear("choose-specialty"), "1",
                                        Hear("anything-else"), "9"), dialled)
    if roll < 0.78:
        return Script("address", number, (Hear("main-menu"), "3", Hear("anything-else"), "9"),
                      dialled)
    if roll < 0.92:
        cut = rng.randrange(1, len(BOOK) - 2)
        return Script("hang_up", number, (*BOOK[:cut], Wait(rng.random() * 3), HangUp()),
                      dialled)
    return Script("wrong_keys", number, (Hear("main-menu"), "7", Hear("main-menu-short"), "8",
                                         Hear("main-menu-short"), "9"), dialled)


def _plays(exchange: Exchange, prompt: str) -> bool:
    """Whether a command played the prompt `prompt`: its first argument is the file, or it
    is EXEC Read(variable,file&file...,...), a menu's prompts and wait in one command."""
    args = exchange.command.args
    if len(args) > 1 and args[0].lower() == "read":
        files = (args[1].split(",") + [""])[1].split("&")
    else:
        files = list(args[:1])
    return any(file.endswith("/" + prompt) for file in files)


def _carries_key(exchange: Exchange) -> bool:
    """Whether a reply brought the confirming key: a STREAM FILE's or GET DATA's result, or
    the keys a Read() left in its variable, read back by GET FULL VARIABLE as
    "READSTATUS:keys"."""
    if exchange.command.verb == "GET FULL VARIABLE":
        return (exchange.reply.data or "").partition(":")[2] == "1"
    return exchange.reply.result == CONFIRM_KEY


def action_seconds(transcript: CallTranscript, turnaround: list[float]) -> float | None:
    """nobat's time from the reply carrying the confirming key to its next command: the
    action itself (a booking written, then the code or "slot taken" sent), on the server."""
    exchanges = transcript.exchanges
    asked = next((i for i, e in enumerate(exchanges) if _plays(e, "confirm-keys")), None)
    if asked is None:
        return None
    key = next((i for i in range(asked, len(exchanges))
                if _carries_key(exchanges[i])), None)
    if key is None or key + 1 >= min(len(exchanges), len(turnaround)):
        return None
    return turnaround[key + 1]
