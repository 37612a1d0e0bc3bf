"""A practice's office as staff write it: the dial target callers are put through to and the
weekly hours it answers, read alike from config.toml and from a clinic file."""

from __future__ import annotations

import re
from typing import Any

from clinic.calendar import Weekday
from clinic.schedule import parse_clock

OfficeWeek = dict[Weekday, tuple[int, int]]
"""When the office answers: minutes from midnight, start and end, by weekday."""

_TARGET = r"[A-Za-z][A-Za-z0-9_]*/[^\s,;&|\"'\\$(){}\[\]]+"
_DIAL_TARGET = re.compile(rf"{_TARGET}(?:&{_TARGET})*")
"""What Dial() takes as its first argument: TECH/resource, several joined by '&'. A comma,
a quote or a ${...} would turn the rest into Dial()'s options or the dialplan's own words."""

OFFICE_HOURS_FORMAT = "a table of weekday = \"HH:MM-HH:MM\""
"""How the office hours are written, for the message when they are not."""


def parse_dial_target(text: str) -> str:
    """Accept an endpoint nobat hands the dialplan to Dial(), such as "PJSIP/office"."""
    if not _DIAL_TARGET.fullmatch(text):
        raise ValueError(f"{text!r} is not a dial target; expected TECH/resource such as "
                         "\"PJSIP/office\" (several joined by &), without spaces, commas, "
                         "quotes or ${...}")
    return text


def parse_office_hours(spec: dict[str, Any]) -> OfficeWeek:
    """Read a table of weekday = "HH:MM-HH:MM"; a day left out is a day the office is shut."""
    hours: OfficeWeek = {}
    for name, span in spec.items():
        if not isinstance(span, str) or span.count("-") != 1:
            raise ValueError(f"{name}: expected \"HH:MM-HH:MM\" such as \"08:00-20:00\"")
        start, end = (parse_clock(part) for part in span.split("-"))
        if start >= end:
            raise ValueError(f"{name}: {span!r} ends before it starts")
        hours[Weekday.parse(name)] = (start, end)
    return hours


def office_hours_text(hours: OfficeWeek) -> str:
    """Write office hours as one line ("saturday=08:00-20:00,...") that the store keeps and
    `office_hours_of_text` reads back."""
    return ",".join(f"{day.name.lower()}={_clock(start)}-{_clock(end)}"
                    for day, (start, end) in sorted(hours.items()))


def office_hours_of_text(text: str) -> OfficeWeek:
    """Read office hours written by `office_hours_text`; ValueError for any other text."""
    parts = [part for part in text.split(",") if part]
    if not all("=" in part for part in parts):
        raise ValueError(f"office hours {text!r}: expected day=HH:MM-HH:MM, comma-separated")
    return parse_office_hours(dict(part.split("=", 1) for part in parts))


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"
