"""Spoken numbers, times and Jalali dates are composed only from fragments that exist."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ivr import speech

TEHRAN = ZoneInfo("Asia/Tehran")


def spoken(keys: list[str], lang: str = "fa") -> str:
    texts = speech.fragment_texts(lang)
    return " ".join(texts[k] for k in keys)


@pytest.mark.parametrize(("n", "keys", "words"), [
    (0, ["num/0"], "صفر"),
    (21, ["num/20-o", "num/1"], "بیست و یک"),
    (100, ["num/100"], "صد"),
    (1405, ["num/1000-o", "num/400-o", "num/5"], "هزار و چهارصد و پنج"),
    (2000, ["num/2", "num/1000"], "دو هزار"),
    (12345, ["num/12", "num/1000-o", "num/300-o", "num/40-o", "num/5"],
     "دوازده هزار و سیصد و چهل و پنج"),
])
def test_persian_numbers_join_their_parts_with_o(n: int, keys: list[str], words: str) -> None:
    assert speech.number(n) == keys
    assert spoken(keys) == words


def test_english_numbers() -> None:
    assert spoken(speech.number(2005, "en"), "en") == "two thousand five"
    assert spoken(speech.number(1405, "en"), "en") == "one thousand four hundred five"


def test_times_are_said_in_the_clinics_zone() -> None:
    moment = dt.datetime(2026, 11, 28, 13, 0, tzinfo=dt.UTC)
    assert spoken(speech.clock(moment, "fa", TEHRAN)) == "ساعت شانزده و سی دقیقه"
    assert spoken(speech.clock(moment, "en", TEHRAN), "en") == "four thirty p m"
    on_the_hour = dt.datetime(2026, 11, 28, 12, 30, tzinfo=dt.UTC)
    assert spoken(speech.clock(on_the_hour, "fa", TEHRAN)) == "ساعت شانزده"
    early = dt.datetime(2026, 11, 28, 5, 35, tzinfo=dt.UTC)
    assert spoken(speech.clock(early, "en", TEHRAN), "en") == "nine oh five a m"


def test_dates_are_jalali_with_weekday_day_and_month() -> None:
    assert spoken(speech.date(dt.date(2026, 11, 28))) == "شنبه هفتم آذر"
    assert spoken(speech.date(dt.date(2026, 12, 14)), "en") == "Monday twenty-third Azar"


def test_codes_are_said_digit_by_digit() -> None:
    assert spoken(speech.digits("120034")) == "یک دو صفر صفر سه چهار"
    with pytest.raises(ValueError, match="not digits"):
        speech.digits("12a")


@pytest.mark.parametrize(("day", "fa", "en"), [(1, "یکم", "first"), (3, "سوم", "third"),
                                                (23, "بیست و سوم", "twenty-third"),
                                                (30, "سی‌ام", "thirtieth"),
                                                (31, "سی و یکم", "thirty-first")])
def test_ordinals(day: int, fa: str, en: str) -> None:
    assert (speech.ordinal_fa(day), speech.ordinal_en(day)) == (fa, en)


@given(st.integers(0, speech.MAX_NUMBER), st.sampled_from(speech.LANGUAGES), st.booleans())
def test_every_number_uses_only_known_fragments(n: int, lang: str, joined: bool) -> None:
    texts = speech.fragment_texts(lang)
    assert all(key in texts for key in speech.number(n, lang, joined))


@given(st.datetimes(dt.datetime(1990, 1, 1), dt.datetime(2100, 1, 1), timezones=st.just(dt.UTC)),
       st.sampled_from(speech.LANGUAGES))
def test_every_time_and_date_uses_only_known_fragments(moment: dt.datetime, lang: str) -> None:
    texts = speech.fragment_texts(lang)
    keys = speech.clock(moment, lang, TEHRAN) + speech.date(moment.date(), lang)
    assert all(key in texts for key in keys)


def test_numbers_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="only 0 to 999999"):
        speech.number(-1)
