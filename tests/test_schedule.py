"""Slots from weekly hours, closures and bookings, in Asia/Tehran, around the day boundary."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clinic.calendar import Weekday
from clinic.schedule import (
    TEHRAN,
    HoursRule,
    Interval,
    VisitKind,
    day_bounds,
    day_slots,
    free_slots,
    parse_clock,
)

IN_PERSON = frozenset({VisitKind.IN_PERSON})
SATURDAY = dt.date(2026, 11, 28)


def at(day: dt.date, clock: str) -> dt.datetime:
    """A Tehran wall-clock time as a UTC instant."""
    hour, minute = map(int, clock.split(":"))
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=TEHRAN).astimezone(dt.UTC)


def test_a_block_is_cut_into_slots_in_tehran_time() -> None:
    rule = HoursRule(Weekday.SATURDAY, parse_clock("16:00"), parse_clock("17:00"), 20, IN_PERSON)
    slots = day_slots(SATURDAY, [rule])
    assert [s.start for s in slots] == [at(SATURDAY, "16:00"), at(SATURDAY, "16:20"),
                                        at(SATURDAY, "16:40")]
    assert slots[0].start.hour == 12 and slots[0].start.minute == 30
    assert day_slots(SATURDAY + dt.timedelta(days=1), [rule]) == []


def test_a_block_that_does_not_divide_evenly_drops_the_short_remainder() -> None:
    rule = HoursRule(Weekday.SATURDAY, 9 * 60, 10 * 60 + 10, 20, IN_PERSON)
    assert len(day_slots(SATURDAY, [rule])) == 3


def test_closures_bookings_and_the_past_remove_slots() -> None:
    rule = HoursRule(Weekday.SATURDAY, 9 * 60, 12 * 60, 30, IN_PERSON)
    free = free_slots(SATURDAY, [rule],
                      closures=[Interval(at(SATURDAY, "11:00"), at(SATURDAY, "12:00"))],
                      booked=[Interval(at(SATURDAY, "10:00"), at(SATURDAY, "10:30"))],
                      not_before=at(SATURDAY, "09:10"))
    assert [s.start for s in free] == [at(SATURDAY, "09:30"), at(SATURDAY, "10:30")]


def test_hours_may_run_to_midnight_and_stay_on_their_own_day() -> None:
    rule = HoursRule(Weekday.SATURDAY, 23 * 60, 24 * 60, 30, IN_PERSON)
    slots = day_slots(SATURDAY, [rule])
    assert slots[-1].end == at(SATURDAY + dt.timedelta(days=1), "00:00")
    bounds = day_bounds(SATURDAY)
    assert all(bounds.start <= s.start and s.end <= bounds.end for s in slots)


@pytest.mark.parametrize(("start", "end", "slot", "message"), [
    (600, 540, 15, "run forward"),
    (540, 600, 2, "between 5 and 240"),
    (540, 550, 15, "shorter than one slot"),
])
def test_impossible_blocks_are_refused(start: int, end: int, slot: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HoursRule(Weekday.SATURDAY, start, end, slot, IN_PERSON)


@pytest.mark.parametrize("text", ["25:00", "9", "09:60", "ab:cd", "24:01"])
def test_bad_clock_times_name_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match="not a time of day"):
        parse_clock(text)


@st.composite
def rules(draw: st.DrawFn) -> list[HoursRule]:
    """Non-overlapping weekly blocks, as the clinic file loader guarantees."""
    out: list[HoursRule] = []
    for weekday in draw(st.sets(st.sampled_from(list(Weekday)), max_size=7)):
        cursor = draw(st.integers(0, 20 * 60))
        for _ in range(draw(st.integers(1, 3))):
            slot = draw(st.sampled_from([5, 10, 15, 20, 30, 45, 60]))
            start = cursor + draw(st.integers(0, 120))
            end = start + slot * draw(st.integers(1, 12))
            if end > 24 * 60:
                break
            out.append(HoursRule(weekday, start, end, slot,
                                 frozenset(draw(st.sets(st.sampled_from(list(VisitKind)),
                                                        min_size=1)))))
            cursor = end
    return out


instants = st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2027, 12, 31),
                        timezones=st.just(dt.UTC))
spans = st.tuples(instants, st.integers(1, 24 * 60)).map(
    lambda p: Interval(p[0], p[0] + dt.timedelta(minutes=p[1])))


@given(rules(), st.dates(dt.date(2026, 1, 1), dt.date(2027, 12, 31)),
       st.lists(spans, max_size=4), st.lists(spans, max_size=6), instants)
def test_free_slots_are_exactly_the_open_future_slots(
        weekly: list[HoursRule], day: dt.date, closures: list[Interval],
        booked: list[Interval], now: dt.datetime) -> None:
    free = free_slots(day, weekly, closures=closures, booked=booked, not_before=now)
    everything = day_slots(day, weekly)
    bounds = day_bounds(day)
    todays = [r for r in weekly if r.weekday == Weekday.of(day)]
    for slot in free:
        assert slot.start >= now
        assert not any(slot.interval.overlaps(t) for t in [*closures, *booked])
        assert bounds.start <= slot.start < slot.end <= bounds.end
        local = slot.start.astimezone(TEHRAN)
        minute = local.hour * 60 + local.minute
        assert any(r.start_minute <= minute and (minute - r.start_minute) % r.slot_minutes == 0
                   and slot.kinds == r.kinds for r in todays)
    assert free == sorted(free)
    assert all(a.end <= b.start for a, b in itertools.pairwise(free))
    missing = [s for s in everything if s not in free]
    assert all(s.start < now or any(s.interval.overlaps(t) for t in [*closures, *booked])
               for s in missing)
