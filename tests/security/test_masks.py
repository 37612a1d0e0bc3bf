"""Probe: "the page's masks (0935***7919) hide only three digits: the first four are the
operator prefix", which with the IVR's greeting let a script recover a whole number. The
page and its API now show at most the last four digits, behind a fixed seven stars."""

from __future__ import annotations

import json
import re
from pathlib import Path
from zoneinfo import ZoneInfo

from clinic.schedule import VisitKind
from db.booking import Booked, BookingService
from tests.security.wire import TOKEN, exchange, http, log_in, page_server, post_form
from tests.support.consultations import first_phone_slot
from tests.support.server import demo_store

PATIENT = "09351237919"
MASKED_DIGITS = re.compile(r"\*{7}([0-9۰-۹]*)")


async def test_a_patient_on_a_closed_day_shows_by_four_digits_at_most(tmp_path: Path) -> None:
    async with page_server(tmp_path) as server:
        database = await demo_store(tmp_path)
        try:
            service = BookingService(database)
            doctor_id, start = await first_phone_slot(service, "dr-ahmadi")
            assert isinstance(await service.book(PATIENT, doctor_id, start, VisitKind.PHONE),
                              Booked)
        finally:
            await database.close()
        day = start.astimezone(ZoneInfo("Asia/Tehran")).date()
        login = await log_in(server)
        recorded = await post_form(server, "/absences", login, ("doctor", "dr-ahmadi"),
                                   ("first", day.isoformat()))
        assert recorded.status == 303
        api = await exchange(server, http("GET", "/api/status",
                                          ("Authorization", f"Bearer {TOKEN}")))
        [absence] = json.loads(api.body)["absences"]
        assert absence["patient"] == "*******7919"
        page = await exchange(server, http("GET", "/?lang=en", login.header))
        persian = await exchange(server, http("GET", "/", login.header))
    assert "*******7919" in page.text and "*******۷۹۱۹" in persian.text
    for reply in (api, page, persian):
        shown = MASKED_DIGITS.findall(reply.text)
        assert shown and all(len(digits) <= 4 for digits in shown)
        assert "0935" not in reply.text and "۰۹۳۵" not in reply.text
