"""What the page reads from requests, checked before use: form bodies, dates, ids, absence
ranges. Anything else raises `BadInput`, answered 400 in the reader's language."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl

from aiohttp import web

from clinic.calendar import parse_date
from web.page import LANGUAGES
from web.problems import BadInput

ID = re.compile(r"[0-9]{1,18}")
"""A row id: ASCII digits that fit a 64-bit integer (not "²", not 26 digits)."""
YEARS = (1900, 2200)
"""Dates outside these years are typing mistakes, and some overflow date arithmetic."""
MAX_ABSENCE_DAYS = 366
MAX_FIELDS = 50
FORM = "application/x-www-form-urlencoded"


async def read_form(request: web.Request) -> dict[str, str]:
    """The page's form, strictly UTF-8 (a byte that is not, raw or %-escaped, is a 400)."""
    body = await request.read()
    if body and request.content_type != FORM:
        raise BadInput("not_a_form")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, encoding="utf-8",
                          errors="strict", max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise BadInput("form_not_text") from None
    except ValueError:  # more fields than any of the page's forms has
        raise BadInput("not_a_form") from None
    return dict(pairs)


def page_date(text: str) -> dt.date:
    """A date as staff type it (Jalali 1405/09/15 or ISO), between 1900 and 2200."""
    try:
        day = parse_date(text)
    except (ValueError, OverflowError):
        raise BadInput("bad_date", text) from None
    if not YEARS[0] <= day.year <= YEARS[1]:
        raise BadInput("date_out_of_range", text)
    return day


def record_id(text: str) -> int:
    """A row id from a form."""
    if not ID.fullmatch(text):
        raise BadInput("bad_id", text)
    return int(text)


def page_range(query: Mapping[str, str]) -> tuple[dt.date | None, dt.date | None]:
    """The heatmap's range from ?from=&to= (either may be left out)."""
    first, last = (query.get(key, "").strip() for key in ("from", "to"))
    return (page_date(first) if first else None, page_date(last) if last else None)


def absence_days(first_text: str, last_text: str, today: dt.date) -> tuple[dt.date, dt.date]:
    """An absence's days: from today on, at most a year long (a typo must not close the
    clinic for 200 years, nor reopen the past)."""
    first = page_date(first_text)
    last = page_date(last_text) if last_text.strip() else first
    if last < first:
        raise BadInput("range_reversed")
    if first < today:
        raise BadInput("absence_past")
    if (last - first).days >= MAX_ABSENCE_DAYS:
        raise BadInput("absence_too_long")
    return first, last


def kept_query(query: Mapping[str, str]) -> dict[str, str]:
    """The page's own query (language and a valid range), to carry into links and
    redirects; nothing else a client put in the URL travels on."""
    kept = {"lang": query["lang"]} if query.get("lang") in LANGUAGES else {}
    for key in ("from", "to"):
        try:
            if query.get(key, "").strip():
                page_date(query[key])
                kept[key] = query[key].strip()
        except BadInput:
            continue
    return kept
