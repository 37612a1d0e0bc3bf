"""The Iranian week (Saturday first, Friday the weekend) and Jalali dates as staff write them."""

from __future__ import annotations

import datetime as dt
import enum
import functools
import re

import jdatetime


class Weekday(enum.IntEnum):
    """Days in the order the Iranian week runs, so Saturday is 0."""

    SATURDAY = 0
    SUNDAY = 1
    MONDAY = 2
    TUESDAY = 3
    WEDNESDAY = 4
    THURSDAY = 5
    FRIDAY = 6

    @classmethod
    def of(cls, day: dt.date) -> Weekday:
        """Return the weekday of a Gregorian date."""
        return cls((day.weekday() + 2) % 7)

    @classmethod
    def parse(cls, name: str) -> Weekday:
        """Accept an English day name as staff type it in TOML ("saturday", "Sat")."""
        key = name.strip().lower()
        for day in cls:
            if day.name.lower() == key or day.name.lower()[:3] == key:
                return day
        raise ValueError(f"unknown weekday {name!r}; expected one of "
                         + ", ".join(d.name.lower() for d in cls))


WEEKDAY_FA = ("شنبه", "یکشنبه", "دوشنبه", "سه‌شنبه", "چهارشنبه", "پنجشنبه", "جمعه")
MONTH_FA = ("فروردین", "اردیبهشت", "خرداد", "تیر", "مرداد", "شهریور",
            "مهر", "آبان", "آذر", "دی", "بهمن", "اسفند")
MONTH_EN = ("Farvardin", "Ordibehesht", "Khordad", "Tir", "Mordad", "Shahrivar",
            "Mehr", "Aban", "Azar", "Dey", "Bahman", "Esfand")

_JALALI_TEXT = re.compile(r"(1[34]\d\d)[/-](\d{1,2})[/-](\d{1,2})")


@functools.lru_cache(maxsize=4096)
def to_jalali(day: dt.date) -> jdatetime.date:
    """Return the Solar Hijri date of a Gregorian date (kept: every menu of days asks again)."""
    return jdatetime.date.fromgregorian(date=day)


def parse_date(text: str) -> dt.date:
    """Read a date staff wrote as Jalali ("1405/09/15") or Gregorian ISO ("2026-12-06")."""
    match = _JALALI_TEXT.fullmatch(text.strip())
    if match:
        year, month, day = (int(g) for g in match.groups())
        try:
            return jdatetime.date(year, month, day).togregorian()
        except ValueError:
            raise ValueError(f"{text!r} is not a Jalali date: no such day in the calendar "
                             "(months 1-12; months 7-12 have 30 days or fewer)") from None
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a date; expected Jalali 1405/09/15 "
                         "or Gregorian 2026-12-06") from None


def format_jalali(day: dt.date, lang: str = "fa") -> str:
    """Write a date the way the clinic reads it: weekday, day, Jalali month and year."""
    j = to_jalali(day)
    weekday = Weekday.of(day)
    if lang == "fa":
        return f"{WEEKDAY_FA[weekday]} {j.day} {MONTH_FA[j.month - 1]} {j.year}"
    return f"{weekday.name.title()} {j.day} {MONTH_EN[j.month - 1]} {j.year}"
