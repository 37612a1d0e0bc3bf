"""Numbers, times and Jalali dates spoken as sequences of recorded fragments, fa and en.

Asterisk has no Persian SAY, so nobat composes speech from prompt files. Persian joins the
parts of a number with «و», spoken "-o" (bist-o yek): a part followed by another is played
from its own joined recording ("num/20-o"), never glued from separate words.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from clinic.calendar import MONTH_EN, MONTH_FA, WEEKDAY_FA, Weekday, to_jalali

ONES_FA = ("صفر", "یک", "دو", "سه", "چهار", "پنج", "شش", "هفت", "هشت", "نه", "ده", "یازده",
           "دوازده", "سیزده", "چهارده", "پانزده", "شانزده", "هفده", "هجده", "نوزده")
TENS_FA = {20: "بیست", 30: "سی", 40: "چهل", 50: "پنجاه", 60: "شصت", 70: "هفتاد", 80: "هشتاد",
           90: "نود"}
HUNDREDS_FA = {100: "صد", 200: "دویست", 300: "سیصد", 400: "چهارصد", 500: "پانصد", 600: "ششصد",
               700: "هفتصد", 800: "هشتصد", 900: "نهصد"}
ONES_EN = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
           "eighteen", "nineteen")
TENS_EN = {20: "twenty", 30: "thirty", 40: "forty", 50: "fifty", 60: "sixty", 70: "seventy",
           80: "eighty", 90: "ninety"}
ORDINAL_EN = {1: "first", 2: "second", 3: "third", 5: "fifth", 8: "eighth", 9: "ninth",
              12: "twelfth"}
LANGUAGES = ("fa", "en")
MAX_NUMBER = 999_999


def _parts(n: int) -> list[int]:
    """Split a number into the values a speaker names: 1405 -> [1000, 400, 5]."""
    if not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"cannot speak {n}: only 0 to {MAX_NUMBER}")
    if n < 20:
        return [n]
    parts: list[int] = []
    thousands, n = divmod(n, 1000)
    if thousands:
        parts += ([] if thousands == 1 else _parts(thousands)) + [1000]
    hundreds, n = divmod(n, 100)
    if hundreds:
        parts.append(hundreds * 100)
    if n >= 20:
        parts.append(n - n % 10)
        n %= 10
    if n:
        parts.append(n)
    return parts


def number(n: int, lang: str = "fa", joined: bool = False) -> list[str]:
    """Fragments that say `n`; `joined` when more speech follows with «و» (fa)."""
    parts = _parts(n)
    if lang == "en":
        return ["num/1"] * (parts[0] == 1000) + [f"num/{p}" for p in parts]
    keys: list[str] = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        multiplier = not last and parts[index + 1] == 1000 and part != 1000
        suffix = "-o" if (not last and not multiplier) or (last and joined) else ""
        keys.append(f"num/{part}{suffix}")
    return keys


def digits(text: str, lang: str = "fa") -> list[str]:
    """Say a code digit by digit, as callers write it down."""
    if not text.isdigit():
        raise ValueError(f"not digits: {text!r}")
    return [f"num/{d}" for d in text]


def clock(moment: dt.datetime, lang: str = "fa", tz: ZoneInfo | None = None) -> list[str]:
    """Say a time of day: "sā'at shānzdah-o si daqiqe" / "four thirty p m"."""
    local = moment.astimezone(tz) if tz else moment
    if lang == "en":
        hour = local.hour % 12 or 12
        keys = number(hour, "en")
        if local.minute:
            keys += (["time/oh"] if local.minute < 10 else []) + number(local.minute, "en")
        return keys + ["time/pm" if local.hour >= 12 else "time/am"]
    if not local.minute:
        return ["time/hour"] + number(local.hour)
    return ["time/hour"] + number(local.hour, joined=True) + number(local.minute) + ["time/minutes"]


def date(day: dt.date, lang: str = "fa") -> list[str]:
    """Say a date the Jalali way: weekday, day of the month, month name."""
    jalali = to_jalali(day)
    return [f"day/{Weekday.of(day).name.lower()}", f"ord/{jalali.day}", f"month/{jalali.month}"]


def ordinal_fa(n: int) -> str:
    """The Persian ordinal of a day of the month: یکم، دوم، سوم، بیست و یکم، سی‌ام."""
    words = cardinal_fa(n)
    if words.endswith("سه"):
        return words[:-2] + "سوم"
    if words.endswith("ی"):
        return words + "‌ام"
    return words + "م"


def cardinal_fa(n: int) -> str:
    """Write a number in Persian words, parts joined with «و»."""
    names = {**dict(enumerate(ONES_FA)), **TENS_FA, **HUNDREDS_FA, 1000: "هزار"}
    words: list[str] = []
    parts = _parts(n)
    for index, part in enumerate(parts):
        words.append(names[part])
        if index < len(parts) - 1 and parts[index + 1] != 1000:
            words.append("و")
    return " ".join(words)


def ordinal_en(n: int) -> str:
    """The English ordinal of a day of the month."""
    tens, ones = divmod(n, 10)
    if n in ORDINAL_EN:
        return ORDINAL_EN[n]
    if n < 20:
        return ONES_EN[n] + "th"
    if ones == 0:
        return TENS_EN[n][:-1] + "ieth"
    return f"{TENS_EN[tens * 10]}-{ORDINAL_EN.get(ones, ONES_EN[ones] + 'th')}"


def fragment_texts(lang: str) -> dict[str, str]:
    """The text of every fragment this module composes, for the prompt builder and try-out."""
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}")
    texts: dict[str, str] = {}
    values = [*range(20), *range(20, 100, 10), *range(100, 1000, 100), 1000]
    for value in values:
        if lang == "fa":
            word = cardinal_fa(value) if value != 1000 else "هزار"
            texts[f"num/{value}"] = word
            texts[f"num/{value}-o"] = f"{word} و"
        else:
            texts[f"num/{value}"] = _en_word(value)
    for day in range(1, 32):
        texts[f"ord/{day}"] = ordinal_fa(day) if lang == "fa" else ordinal_en(day)
    for month in range(1, 13):
        texts[f"month/{month}"] = (MONTH_FA if lang == "fa" else MONTH_EN)[month - 1]
    for weekday in Weekday:
        texts[f"day/{weekday.name.lower()}"] = (WEEKDAY_FA[weekday] if lang == "fa"
                                                else weekday.name.title())
    if lang == "fa":
        texts.update({"time/hour": "ساعت", "time/minutes": "دقیقه"})
    else:
        texts.update({"time/oh": "oh", "time/am": "a m", "time/pm": "p m"})
    return texts


def _en_word(value: int) -> str:
    if value < 20:
        return ONES_EN[value]
    if value < 100:
        return TENS_EN[value]
    if value < 1000:
        return f"{ONES_EN[value // 100]} hundred"
    return "thousand"
