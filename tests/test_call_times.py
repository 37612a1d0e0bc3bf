"""When patients may be rung: quiet hours, no-call days, reminders the day before."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clinic.calendar import Weekday
from clinic.call_times import CallHours, ReminderTimes, retry_time
from clinic.schedule import TEHRAN
from tests.test_schedule import at

HOURS = CallHours(21 * 60, 8 * 60, frozenset({Weekday.FRIDAY}), TEHRAN)
REMINDERS = ReminderTimes(1, 18 * 60, HOURS, dt.timedelta(hours=2))
SATURDAY = dt.date(2026, 11, 28)
THURSDAY, FRIDAY, SUNDAY = (SATURDAY + dt.timedelta(days=n) for n in (-2, -1, 1))


@pytest.mark.parametrize(("moment", "allowed"), [
    (at(THURSDAY, "20:59"), True), (at(THURSDAY, "21:00"), False),
    (at(SATURDAY, "07:59"), False), (at(SATURDAY, "08:00"), True),
    (at(FRIDAY, "12:00"), False),
])
def test_calls_are_allowed_outside_the_quiet_hours_and_not_on_friday(
        moment: dt.datetime, allowed: bool) -> None:
    assert HOURS.allowed(moment) is allowed


def test_the_next_allowed_minute_after_thursday_night_is_saturday_morning() -> None:
    assert HOURS.next_allowed(at(THURSDAY, "22:15")) == at(SATURDAY, "08:00")
    assert HOURS.next_allowed(at(SATURDAY, "03:00")) == at(SATURDAY, "08:00")
    assert HOURS.next_allowed(at(SUNDAY, "10:00")) == at(SUNDAY, "10:00")


def test_a_reminder_comes_the_evening_before_or_before_friday() -> None:
    assert REMINDERS.due(at(SUNDAY, "10:00"), at(THURSDAY, "09:00")) == at(SATURDAY, "18:00")
    # The day before Saturday is Friday, a no-call day: Thursday evening instead.
    assert REMINDERS.due(at(SATURDAY, "10:00"), at(THURSDAY, "09:00")) == at(THURSDAY, "18:00")


def test_a_booking_made_after_its_reminder_time_is_reminded_at_once_if_in_time() -> None:
    assert REMINDERS.due(at(SUNDAY, "16:00"), at(SATURDAY, "19:30")) == at(SATURDAY, "19:30")
    # Booked at night: the next morning, still before the two-hour cut-off.
    assert REMINDERS.due(at(SUNDAY, "11:00"), at(SATURDAY, "23:00")) == at(SUNDAY, "08:00")
    # Too late: 08:00 would leave less than two hours before a 09:30 visit.
    assert REMINDERS.due(at(SUNDAY, "09:30"), at(SATURDAY, "23:00")) is None


def test_a_retry_is_never_at_night_and_never_past_its_deadline() -> None:
    minute = dt.timedelta(minutes=1)
    assert retry_time(HOURS, at(THURSDAY, "20:30"), minute, at(SATURDAY, "08:00")) == \
        at(THURSDAY, "20:31")
    assert retry_time(HOURS, at(THURSDAY, "20:59"), minute, at(SATURDAY, "08:00")) == \
        at(SATURDAY, "08:00")
    assert retry_time(HOURS, at(THURSDAY, "20:59"), minute, at(FRIDAY, "12:00")) is None


@given(st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2027, 12, 31)),
       st.integers(0, 23), st.integers(1, 23), st.sets(st.sampled_from(list(Weekday)),
                                                        max_size=6))
def test_the_next_allowed_minute_is_allowed_and_never_earlier(
        moment: dt.datetime, quiet_from: int, quiet_hours: int, days: set[Weekday]) -> None:
    hours = CallHours(quiet_from * 60, (quiet_from + quiet_hours) % 24 * 60, frozenset(days),
                      TEHRAN)
    when = moment.replace(tzinfo=dt.UTC)
    found = hours.next_allowed(when)
    assert found >= when and hours.allowed(found)
    assert found - when <= dt.timedelta(days=7)
