"""Weekly hours and closures turned into bookable slots, in the clinic's time zone."""

from __future__ import annotations

import bisect
import datetime as dt
import enum
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from clinic.calendar import Weekday

TEHRAN = ZoneInfo("Asia/Tehran")
UTC = dt.UTC


class VisitKind(enum.StrEnum):
    """How the patient meets the doctor."""

    IN_PERSON = "in_person"
    PHONE = "phone"


@dataclass(frozen=True)
class HoursRule:
    """One block of a doctor's week: a weekday, minutes from midnight, slot length, kinds."""

    weekday: Weekday
    start_minute: int
    end_minute: int
    slot_minutes: int
    kinds: frozenset[VisitKind]

    def __post_init__(self) -> None:
        if not 0 <= self.start_minute < self.end_minute <= 24 * 60:
            raise ValueError("hours must run forward within one day (00:00 to 24:00)")
        if not 5 <= self.slot_minutes <= 240:
            raise ValueError("slot length must be between 5 and 240 minutes")
        if self.end_minute - self.start_minute < self.slot_minutes:
            raise ValueError("the block is shorter than one slot")
        if not self.kinds:
            raise ValueError("a block needs at least one visit kind")

    def overlaps(self, other: HoursRule) -> bool:
        """Tell whether two blocks share time on the same weekday."""
        return (self.weekday == other.weekday and self.start_minute < other.end_minute
                and other.start_minute < self.end_minute)


@dataclass(frozen=True, order=True)
class Interval:
    """A span of absolute time, in UTC."""

    start: dt.datetime
    end: dt.datetime

    def overlaps(self, other: Interval) -> bool:
        """Tell whether two spans share any time (touching ends do not)."""
        return self.start < other.end and other.start < self.end


@dataclass(frozen=True, order=True)
class Slot:
    """A bookable span of a doctor's time and the visit kinds it offers."""

    start: dt.datetime
    end: dt.datetime
    kinds: frozenset[VisitKind]

    @property
    def interval(self) -> Interval:
        """Return the span without the kinds."""
        return Interval(self.start, self.end)


def local_midnight(day: dt.date, tz: ZoneInfo = TEHRAN) -> dt.datetime:
    """Return the instant a local day starts."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=tz)


def day_bounds(day: dt.date, tz: ZoneInfo = TEHRAN) -> Interval:
    """Return the UTC span of one local day."""
    return Interval(local_midnight(day, tz).astimezone(UTC),
                    local_midnight(day + dt.timedelta(days=1), tz).astimezone(UTC))


def day_slots(day: dt.date, rules: Iterable[HoursRule], tz: ZoneInfo = TEHRAN) -> list[Slot]:
    """Lay the slots of one local day from the weekly rules that fall on its weekday."""
    weekday = Weekday.of(day)
    return list(_laid_out(day, tuple(r for r in rules if r.weekday == weekday), tz))


@functools.lru_cache(maxsize=4096)
def _laid_out(day: dt.date, rules: tuple[HoursRule, ...], tz: ZoneInfo) -> tuple[Slot, ...]:
    """Cached, since menus and the rush ask for the same days over and over."""
    midnight = local_midnight(day, tz)
    slots: list[Slot] = []
    for rule in rules:
        minute = rule.start_minute
        while minute + rule.slot_minutes <= rule.end_minute:
            start = (midnight + dt.timedelta(minutes=minute)).astimezone(UTC)
            end = (midnight + dt.timedelta(minutes=minute + rule.slot_minutes)).astimezone(UTC)
            slots.append(Slot(start, end, rule.kinds))
            minute += rule.slot_minutes
    return tuple(sorted(slots))


def free_slots(
    day: dt.date,
    rules: Iterable[HoursRule],
    *,
    closures: Iterable[Interval] = (),
    booked: Iterable[Interval] = (),
    not_before: dt.datetime,
    tz: ZoneInfo = TEHRAN,
) -> list[Slot]:
    """Slots of a day minus closures, minus bookings, and none starting before `not_before`."""
    return list(open_slots(day, rules, Taken.of([*closures, *booked]), not_before=not_before,
                           tz=tz))


@dataclass(frozen=True)
class Taken:
    """Spans no slot may overlap (closures, bookings), merged and sorted once, so that a search
    over many days does not merge them again for each day."""

    spans: tuple[Interval, ...]
    ends: tuple[dt.datetime, ...]

    @classmethod
    def of(cls, spans: Iterable[Interval]) -> Taken:
        """Merge `spans`."""
        joined = merged(spans)
        return cls(tuple(joined), tuple(span.end for span in joined))


def open_slots(day: dt.date, rules: Iterable[HoursRule], taken: Taken, *,
               not_before: dt.datetime, tz: ZoneInfo = TEHRAN) -> Iterator[Slot]:
    """free_slots one at a time, so that "is any slot of this day free" stops at the first."""
    for slot in day_slots(day, rules, tz):
        if slot.start < not_before:
            continue
        first = bisect.bisect_right(taken.ends, slot.start)
        if first == len(taken.spans) or taken.spans[first].start >= slot.end:
            yield slot


def merged(spans: Iterable[Interval]) -> list[Interval]:
    """Join overlapping or touching spans into a sorted list of disjoint ones."""
    out: list[Interval] = []
    for span in sorted(spans):
        if out and span.start <= out[-1].end:
            if span.end > out[-1].end:
                out[-1] = Interval(out[-1].start, span.end)
        else:
            out.append(span)
    return out


def parse_clock(text: str) -> int:
    """Read "16:30" (or "24:00" for the end of the day) as minutes from midnight."""
    try:
        hours, minutes = text.strip().split(":")
        value = int(hours) * 60 + int(minutes)
    except ValueError:
        raise ValueError(f"{text!r} is not a time of day; expected HH:MM such as 16:30") from None
    if not (0 <= int(minutes) < 60 and 0 <= value <= 24 * 60):
        raise ValueError(f"{text!r} is not a time of day; expected 00:00 to 24:00")
    return value
