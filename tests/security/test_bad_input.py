"""Probes: "Unauthenticated 500s with tracebacks" (non-UTF-8 bytes in Authorization, Cookie,
X-CSRF-Token or the login body), "Authenticated 500s" (dates such as 0001-01-01 or
9999-12-31, ids such as ² or 26 digits) and "The absence form accepts any range" (200
years, a first day in the past). Each is now a 400 with words in the page's language."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest

from tests.security.wire import (
    TOKEN,
    exchange,
    form,
    http,
    log_in,
    post_form,
    traceback_free,
)
from tests.support.server import ServerProcess

BEARER = ("Authorization", f"Bearer {TOKEN}")
TEHRAN = ZoneInfo("Asia/Tehran")


@pytest.mark.parametrize(("header", "value"), [
    ("Authorization", b"Bearer \xff\xfe-not-utf-8"),
    ("Cookie", b"nobat_session=\xc3\x28"),
    ("X-CSRF-Token", b"\xe2\x28\xa1"),
])
async def test_a_header_that_is_not_utf8_is_a_400(server: ServerProcess, header: str,
                                                  value: bytes) -> None:
    login = await log_in(server)  # with a live session, so the CSRF value is compared
    headers = [(header, value)] if header == "Cookie" else [login.header, (header, value)]
    reply = await exchange(server, http("POST", "/reload?lang=en", *headers))
    assert reply.status == 400, reply.text
    assert f"The request&#39;s {header} header is not UTF-8 text." in reply.text
    assert traceback_free(reply)


@pytest.mark.parametrize("body", [b"token=\xff\xfe", b"token=%ff%fe", b"token=\xd8"])
async def test_a_login_body_that_is_not_utf8_is_a_400(server: ServerProcess,
                                                      body: bytes) -> None:
    content_type, _ = form()
    reply = await exchange(server, http("POST", "/login", content_type, body=body))
    assert reply.status == 400
    assert "داده‌های فرم متن UTF-8 نیست." in reply.text  # Persian, the page's default
    assert traceback_free(reply)


@pytest.mark.parametrize(("query", "words"), [
    ("from=0001-01-01", "'0001-01-01' is outside the years 1900 to 2200."),
    ("to=9999-12-31", "'9999-12-31' is outside the years 1900 to 2200."),
    ("to=0001-01-01", "'0001-01-01' is outside the years 1900 to 2200."),
    ("from=2026-02-30", "'2026-02-30' is not a date"),
    ("from=1900-01-01", "A range may span at most 366 days."),
])
async def test_dates_out_of_bounds_are_a_400(server: ServerProcess, query: str,
                                             words: str) -> None:
    api = await exchange(server, http("GET", f"/api/status?{query}", BEARER))
    assert api.status == 400 and words in json.loads(api.body)["error"]
    page = await exchange(server, http("GET", f"/?lang=en&{query}", BEARER))
    assert page.status == 400 and words.replace("'", "&#39;") in page.text
    assert traceback_free(api) and traceback_free(page)


async def test_a_date_out_of_bounds_is_told_in_persian_by_default(
        server: ServerProcess) -> None:
    page = await exchange(server, http("GET", "/?to=9999-12-31", BEARER))
    assert page.status == 400
    assert "«9999-12-31» بیرون از سال‌های ۱۹۰۰ تا ۲۲۰۰ میلادی است." in page.text


@pytest.mark.parametrize("path", ["/absences/cancel", "/absences/lift"])
@pytest.mark.parametrize("ident", ["²", "1" * 26, "-1", "1e3", "٣"])
async def test_an_id_that_is_not_up_to_18_digits_is_a_400(server: ServerProcess, path: str,
                                                          ident: str) -> None:
    field = "appointment" if path.endswith("cancel") else "closure"
    login = await log_in(server)
    reply = await post_form(server, path + "?lang=en", login,
                            (field, ident.encode().hex("%").join(("%", ""))))
    assert reply.status == 400
    assert "is not an id: expected 1 to 18 digits (0-9)." in reply.text
    assert traceback_free(reply)


async def recorded(server: ServerProcess) -> list[object]:
    reply = await exchange(server, http("GET", "/api/status", BEARER))
    return list(json.loads(reply.body)["recorded_absences"])


@pytest.mark.parametrize(("first", "last", "words"), [
    (-1, 0, "Not recorded: the absence&#39;s first day is in the past."),
    (1, 1 + 100 * 365, "Not recorded: an absence may last at most a year (366 days)."),
    (1, 1 + 200 * 365, "is outside the years 1900 to 2200."),
    (3, 2, "The range&#39;s first day is after its last."),
])
async def test_an_absence_in_the_past_or_over_a_year_is_a_400(
        server: ServerProcess, first: int, last: int, words: str) -> None:
    today = dt.datetime.now(TEHRAN).date()
    login = await log_in(server)
    reply = await post_form(server, "/absences?lang=en", login, ("doctor", ""),
                            ("first", (today + dt.timedelta(days=first)).isoformat()),
                            ("last", (today + dt.timedelta(days=last)).isoformat()))
    assert reply.status == 400 and words in reply.text
    assert await recorded(server) == []


async def test_an_absence_may_last_a_year_from_today_and_no_more(
        server: ServerProcess) -> None:
    today = dt.datetime.now(TEHRAN).date()
    login = await log_in(server)
    answers = [(await post_form(server, "/absences", login, ("doctor", "dr-ahmadi"),
                                ("first", today.isoformat()),
                                ("last", (today + dt.timedelta(days=days)).isoformat()))).status
               for days in (366, 365)]
    assert answers == [400, 303]  # 367 days refused; 366 (a leap year) recorded
    assert len(await recorded(server)) == 1


async def test_an_unknown_doctor_is_a_400(server: ServerProcess) -> None:
    tomorrow = dt.datetime.now(TEHRAN).date() + dt.timedelta(days=1)
    login = await log_in(server)
    reply = await post_form(server, "/absences?lang=en", login, ("doctor", "dr-nobody"),
                            ("first", tomorrow.isoformat()))
    assert reply.status == 400 and "there is no doctor &#39;dr-nobody&#39;" in reply.text
    assert await recorded(server) == []
