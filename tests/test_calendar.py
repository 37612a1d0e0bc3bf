"""The Saturday-first week and Jalali dates as staff write and callers hear them."""

import datetime as dt

import pytest

from clinic.calendar import Weekday, format_jalali, parse_date


def test_week_starts_on_saturday() -> None:
    assert Weekday.of(dt.date(2026, 11, 28)) is Weekday.SATURDAY
    assert Weekday.of(dt.date(2026, 11, 27)) is Weekday.FRIDAY
    assert Weekday.parse("Sat") is Weekday.SATURDAY
    with pytest.raises(ValueError, match="unknown weekday 'funday'; expected one of saturday"):
        Weekday.parse("funday")


def test_jalali_and_gregorian_dates_are_both_understood() -> None:
    assert parse_date("1405/09/07") == dt.date(2026, 11, 28)
    assert parse_date("1405-09-07") == dt.date(2026, 11, 28)
    assert parse_date("2026-11-28") == dt.date(2026, 11, 28)
    with pytest.raises(ValueError, match="not a Jalali date"):
        parse_date("1405/13/01")
    with pytest.raises(ValueError, match="expected Jalali 1405/09/15"):
        parse_date("next week")


def test_dates_are_written_in_the_jalali_calendar() -> None:
    assert format_jalali(dt.date(2026, 11, 28)) == "شنبه 7 آذر 1405"
    assert format_jalali(dt.date(2026, 3, 21), "en") == "Saturday 1 Farvardin 1405"
