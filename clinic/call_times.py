"""When nobat may ring a patient: never at night, never on the clinic's no-call days.

Pure rules on instants and the clinic's zone; the store plans and retries calls with them.
A reminder the day before that would fall on a Friday moves to Thursday, the way Iranian
clinics remind before the weekend.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from clinic.calendar import Weekday
from clinic.schedule import local_midnight, parse_clock

DAY_MINUTES = 24 * 60


@dataclass(frozen=True)
class CallHours:
    """The local times patients may be rung: outside the quiet span and the no-call days."""

    quiet_from: int
    """Minutes after midnight when calling stops (21:00 is 1260)."""
    quiet_until: int
    """Minutes after midnight when calling may start again (08:00 is 480)."""
    no_call_days: frozenset[Weekday]
    tz: ZoneInfo

    def allowed(self, moment: dt.datetime) -> bool:
        """Whether a call may start at `moment`."""
        local = moment.astimezone(self.tz)
        if Weekday.of(local.date()) in self.no_call_days:
            return False
        return not is_quiet(local.hour * 60 + local.minute, (self.quiet_from, self.quiet_until))

    def next_allowed(self, moment: dt.datetime) -> dt.datetime:
        """`moment` itself when calling is allowed then, else the first allowed minute after."""
        if self.allowed(moment):
            return moment
        local = moment.astimezone(self.tz)
        for days in range(8):
            day = local.date() + dt.timedelta(days=days)
            start = local_midnight(day, self.tz) + dt.timedelta(minutes=self.quiet_until)
            if start > moment and self.allowed(start):
                return start.astimezone(dt.UTC)
        raise ValueError("no minute of the week is open for calls")

    def next_allowed_by(self, moment: dt.datetime, last: dt.datetime) -> dt.datetime | None:
        """The first allowed minute from `moment`, or None when it comes after `last`."""
        allowed = self.next_allowed(moment)
        return allowed if allowed <= last else None


@dataclass(frozen=True)
class ReminderTimes:
    """When to remind: `days_before` the appointment at local `at` minutes, moved back past
    no-call days; a booking made later is reminded at once, if still in time."""

    days_before: int
    at: int
    hours: CallHours
    last_call_before: dt.timedelta
    """A reminder must come this long before the visit, so the patient can still change it."""

    def planned(self, start: dt.datetime) -> dt.datetime:
        """The reminder's time for an appointment at `start`, had it been booked long ago."""
        tz = self.hours.tz
        day = start.astimezone(tz).date() - dt.timedelta(days=self.days_before)
        while Weekday.of(day) in self.hours.no_call_days:
            day -= dt.timedelta(days=1)
        return (local_midnight(day, tz) + dt.timedelta(minutes=self.at)).astimezone(dt.UTC)

    def due(self, start: dt.datetime, now: dt.datetime) -> dt.datetime | None:
        """When to ring about an appointment at `start`, or None when it is too late."""
        due = self.hours.next_allowed(max(self.planned(start), now))
        return due if due <= self.deadline(start) else None

    def deadline(self, start: dt.datetime) -> dt.datetime:
        """The last moment a reminder (or its retry) for `start` may begin."""
        return start - self.last_call_before


SURVEY_MODES = ("in-call", "call-back", "off")
"""After a phone consultation: the patient stays on the line for the survey, is rung back
for it, or is not surveyed."""
COUNTS = {"reminder_days_before": (0, 7), "survey_after_minutes": (1, DAY_MINUTES),
          "ring_seconds": (5, 300), "attempts": (1, 10), "retry_minutes": (1, DAY_MINUTES)}
"""The bounds of each count config.toml's [patient_calls] and a clinic file's
[clinic.patient_calls] may set."""
_SWITCHES = ("reminders", "absence_calls")


@dataclass(frozen=True)
class CallTries:
    """How a patient call is tried: each try rings this long, this many tries in all, this
    long between them."""

    ring_seconds: int
    attempts: int
    spacing: dt.timedelta


@dataclass(frozen=True)
class PracticeCallRules:
    """A practice's own rules for calling its patients (its clinic file's
    [clinic.patient_calls]): when, which calls and how they are tried; None keeps
    config.toml's [patient_calls] value."""

    quiet_hours: tuple[int, int] | None = None
    no_call_days: frozenset[Weekday] | None = None
    reminder_at: int | None = None
    reminders: bool | None = None
    reminder_days_before: int | None = None
    absence_calls: bool | None = None
    survey: str | None = None
    """One of SURVEY_MODES."""
    survey_after_minutes: int | None = None
    ring_seconds: int | None = None
    attempts: int | None = None
    retry_minutes: int | None = None

    def text(self) -> str | None:
        """How the store keeps them (None when the practice sets none)."""
        own = {name: value for name, value in dataclasses.asdict(self).items()
               if value is not None}
        if self.no_call_days is not None:
            own["no_call_days"] = sorted(int(day) for day in self.no_call_days)
        return json.dumps(own, sort_keys=True) if own else None

    @classmethod
    def of_text(cls, text: str | None) -> PracticeCallRules:
        """What `text` wrote; a ValueError says what in it cannot be read (a row edited by
        hand: the planner skips that practice alone and names it)."""
        own = json.loads(text) if text else {}
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(own, dict) or not set(own) <= names:
            raise ValueError(f"expected an object of {', '.join(sorted(names))}")
        quiet, days, at = own.get("quiet_hours"), own.get("no_call_days"), own.get("reminder_at")
        if quiet is not None and not (isinstance(quiet, list) and len(quiet) == 2
                                      and all(map(_is_minute, quiet)) and quiet[0] != quiet[1]):
            raise ValueError(f"quiet_hours: expected two different minutes of the day, "
                             f"got {quiet!r}")
        if at is not None and not _is_minute(at):
            raise ValueError(f"reminder_at: expected a minute of the day, got {at!r}")
        if days is not None and not (isinstance(days, list) and all(type(d) is int for d in days)
                                     and set(days) < set(map(int, Weekday))):
            raise ValueError(f"no_call_days: expected weekdays 0-6, not all seven, got {days!r}")
        for name in _SWITCHES:
            if own.get(name) is not None and type(own[name]) is not bool:
                raise ValueError(f"{name}: expected true or false, got {own[name]!r}")
        for name, (low, high) in COUNTS.items():
            value = own.get(name)
            if value is not None and not (type(value) is int and low <= value <= high):
                raise ValueError(f"{name}: expected a whole number {low}-{high}, got {value!r}")
        if own.get("survey") is not None and own["survey"] not in SURVEY_MODES:
            raise ValueError(f"survey: expected one of {', '.join(SURVEY_MODES)}, "
                             f"got {own['survey']!r}")
        return cls(**{**own,
                      "quiet_hours": None if quiet is None else (quiet[0], quiet[1]),
                      "no_call_days": None if days is None else frozenset(map(Weekday, days))})

    def hours(self, line: CallHours, tz: ZoneInfo) -> CallHours:
        """The practice's call hours: its own where set, else the line's, in its zone."""
        quiet_from, quiet_until = self.quiet_hours or (line.quiet_from, line.quiet_until)
        days = line.no_call_days if self.no_call_days is None else self.no_call_days
        return CallHours(quiet_from, quiet_until, days, tz)

    def reminder_times(self, line: ReminderTimes, hours: CallHours) -> ReminderTimes:
        """The practice's reminder times, within its `hours`."""
        at = line.at if self.reminder_at is None else self.reminder_at
        days = line.days_before if self.reminder_days_before is None \
            else self.reminder_days_before
        return dataclasses.replace(line, at=at, days_before=days, hours=hours)

    def tries(self, line: CallTries) -> CallTries:
        """How the practice's patient calls are tried: its own where set, else the line's."""
        return CallTries(
            line.ring_seconds if self.ring_seconds is None else self.ring_seconds,
            line.attempts if self.attempts is None else self.attempts,
            line.spacing if self.retry_minutes is None
            else dt.timedelta(minutes=self.retry_minutes))


def parse_quiet_hours(text: str) -> tuple[int, int]:
    """Read "21:00-08:00": when calling stops, and when it may start again."""
    if not isinstance(text, str) or text.count("-") != 1:
        raise ValueError(f"expected \"HH:MM-HH:MM\" such as \"21:00-08:00\", got {text!r}")
    start, end = (parse_clock(part) for part in text.split("-"))
    if start == end:
        raise ValueError(f"{text!r} is empty: it starts where it ends")
    return start, end


def parse_no_call_days(names: list[Any]) -> frozenset[Weekday]:
    """Read ["friday"]; refuses a week with no day left to call on."""
    if not all(isinstance(name, str) for name in names):
        raise ValueError("expected weekday names such as [\"friday\"]")
    if len({Weekday.parse(name) for name in names}) == len(Weekday):
        raise ValueError("every day is a no-call day: no patient could ever be called")
    return frozenset(Weekday.parse(name) for name in names)


def _is_minute(value: object) -> bool:
    """Whether `value` is a minute of the day (0 to 1439), as the store keeps times."""
    return type(value) is int and 0 <= value < DAY_MINUTES


def is_quiet(minute: int, span: tuple[int, int]) -> bool:
    """Whether `minute` of the day falls in the quiet span."""
    start, end = span
    return start <= minute < end if start < end else minute >= start or minute < end


def retry_time(hours: CallHours, failed_at: dt.datetime, spacing: dt.timedelta,
               not_after: dt.datetime) -> dt.datetime | None:
    """When to ring again after an unanswered call, or None when that would be too late."""
    return hours.next_allowed_by(failed_at + spacing, not_after)
