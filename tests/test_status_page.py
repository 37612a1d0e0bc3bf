"""The status page, /api/status and /metrics after a scripted stretch of a clinic's day, read
the way admins read them: in headless Chromium (Debian's, driven by Playwright), as JSON, and
with Prometheus' own parser."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from playwright.async_api import Dialog, Page, async_playwright
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from clinic.calendar import MONTH_FA, Weekday, to_jalali
from clinic.clinic_file import read_clinic
from clinic.schedule import VisitKind
from db.booking import Booked, BookingService
from db.clinic_sync import load_clinic, record_absence, recorded_absences
from db.engine import Database
from db.models import Closure, PatientCall
from db.schema import upgrade
from db.surveys import SurveyStore
from ivr.agi_protocol import Command
from tests.fakepbx.agi_caller import files_played, place_call
from tests.fakepbx.ami_server import FakeAsterisk, nobat_user
from tests.fakepbx.script import Caller, HangUp, Hear
from tests.support.clinic_day import (
    EARLIER_CALLS,
    EARLIER_PATIENT,
    HTML_NAME,
    IVR_CALLERS,
    LONG_PATIENT,
    SILENT_PATIENT,
    TALKING_PATIENT,
    TOKEN,
    UPCOMING_PATIENT,
    Day,
    scripted_day,
)
from tests.support.consultations import first_phone_slot
from tests.support.server import ROOT, ServerProcess, demo_copy, edit_config
from tests.test_flow_reload import ADDRESS_KEY, BROKEN_KEY, edit
from web.page import digits

CHROMIUM = os.environ.get("NOBAT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("NOBAT_ARTIFACTS", ROOT / "test-artifacts"))
TEHRAN_ZONE = ZoneInfo("Asia/Tehran")
PHONES = (UPCOMING_PATIENT, TALKING_PATIENT, SILENT_PATIENT, LONG_PATIENT, EARLIER_PATIENT,
          *IVR_CALLERS)
PERSIAN_DIGITS = frozenset("۰۱۲۳۴۵۶۷۸۹")


async def figure(page: Page, name: str) -> str:
    return await page.locator(f'[data-figure="{name}"] .value').inner_text()


async def cell(page: Page, weekday: Weekday, hour: int) -> str:
    return await page.locator(
        f'#heatmap td[data-weekday="{weekday.name.lower()}"][data-hour="{hour}"]').inner_text()


@pytest.fixture
def artifacts() -> Path:
    """Where the page's screenshots are kept for people to look at (test-artifacts/)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


async def test_the_page_in_a_browser_after_a_scripted_day(tmp_path: Path, artifacts: Path
                                                         ) -> None:
    async with scripted_day(tmp_path) as day, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                   args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            await check_the_day(page, day, artifacts)
        finally:
            await browser.close()


async def check_the_day(page: Page, day: Day, artifacts: Path) -> None:
    dialogs: list[str] = []

    async def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)  # only markup from the data could open one
        await dialog.dismiss()

    page.on("dialog", dismiss)
    # Without the token: the login form, nothing else.
    reply = await page.goto(day.server.base_url + "/")
    assert reply is not None and reply.status == 401
    assert await page.locator("#today").count() == 0
    await page.fill('input[name="token"]', TOKEN)
    await page.click('button[type="submit"]')
    await page.wait_for_selector("#today")

    # Persian first: right to left, Persian digits, Jalali date.
    assert await page.get_attribute("html", "dir") == "rtl"
    assert await page.get_attribute("html", "lang") == "fa"
    assert await figure(page, "calls") == digits(day.calls, "fa")
    assert await figure(page, "bookings") == digits(day.bookings, "fa")
    assert await figure(page, "cancellations") == digits(day.cancellations, "fa")
    assert await figure(page, "completed_consultations") == "۱"
    assert "بیمار: پاسخ نداد" in await page.locator("#failed").inner_text()
    for (weekday, hour), count in day.heatmap.items():
        assert await cell(page, weekday, hour) == digits(count, "fa")
    busiest = max(day.heatmap, key=day.heatmap.__getitem__)
    colour = await page.locator(f'#heatmap td[data-weekday="{busiest[0].name.lower()}"]'
                                f'[data-hour="{busiest[1]}"]').evaluate(
        "cell => getComputedStyle(cell).backgroundColor")
    assert colour == "rgb(192, 57, 43)"  # the deepest colour, from the page's stylesheet
    quiet = next((w, h) for w in Weekday for h in range(24) if (w, h) not in day.heatmap)
    assert await cell(page, *quiet) == ""
    health = await page.locator("#health").inner_text()
    assert "وصل" in health and "آماده" in health  # AMI connected, FastAGI listening
    await check_the_date(page)
    await check_the_minutes(page, day)

    # Now: a consultation talking, and a caller who waits at the main menu.
    talking = await page.locator("#live-consultations").inner_text()
    assert "دکتر سارا مرادی" in talking and "در گفتگو" in talking and "*******۰۰۰۳" in talking
    at_menu, read = asyncio.Event(), asyncio.Event()

    async def listen_to_the_menu(command: Command) -> None:
        if any(file.endswith("/main-menu") for file in files_played(command)):
            at_menu.set()
            await read.wait()  # the caller listens while the admin looks

    waiting = asyncio.create_task(place_call(
        "127.0.0.1", day.server.fastagi_port,
        Caller.dialling("09127770009", Hear("main-menu"), HangUp()), strict=False,
        before=listen_to_the_menu))
    try:
        await asyncio.wait_for(at_menu.wait(), 10)
        await page.reload()
        live = await page.locator("#live-calls").inner_text()
        assert "*******۰۰۰۹" in live and "main" in live
    finally:
        read.set()
        await waiting

    # The next consultation: its patient masked; in English its doctor's name (staff data
    # with an <img onerror> in it) shows as text, and no element of it reaches the page.
    upcoming = page.locator("#upcoming")
    assert "*******۲۲۳۳" in await upcoming.inner_text()
    await page.click("#switch")
    await page.wait_for_selector('html[dir="ltr"]')
    assert await page.locator("h2").first.inner_text() == "Health"
    assert HTML_NAME in await upcoming.inner_text()
    assert await page.locator("img").count() == 0
    assert dialogs == []
    assert "*******2233" in await upcoming.inner_text()
    assert await figure(page, "calls") == str(day.calls + 1)  # with the caller at the menu
    assert "patient: no answer" in await page.locator("#failed").inner_text()
    text = await page.locator("body").inner_text()
    for number in PHONES:
        assert number not in text and number[1:] not in text
    await page.screenshot(path=str(artifacts / "status-page-en.png"), full_page=True)
    await page.click("#switch")
    await page.wait_for_selector('html[dir="rtl"]')
    await page.screenshot(path=str(artifacts / "status-page-fa.png"), full_page=True)
    await check_a_range(page, day)
    assert dialogs == []


async def check_the_date(page: Page) -> None:
    """The header's date is today's in the Jalali calendar, in Persian digits."""
    today = to_jalali(dt.datetime.now(TEHRAN_ZONE).date())
    shown = await page.locator("#today-date").inner_text()
    date, _, time = shown.partition(" · ")
    assert date.endswith(f' {digits(today.day, "fa")} {MONTH_FA[today.month - 1]} '
                         f'{digits(today.year, "fa")}'), shown
    assert not any(c.isascii() and c.isdigit() for c in shown), shown
    assert len(time) == 5 and set(time) - {":"} <= PERSIAN_DIGITS, shown


async def check_the_minutes(page: Page, day: Day) -> None:
    """Minutes by day: the earlier day's consultation with its talk time, in Persian."""
    for talked_on, minutes in day.minutes.items():
        row = await page.locator(f'#minutes tr[data-day="{talked_on.isoformat()}"]'
                                 ).inner_text()
        assert row.split()[-1] == digits(minutes, "fa"), row
        assert digits(to_jalali(talked_on).day, "fa") in row
    rows = await page.locator("#minutes tr").count()
    assert rows == 28  # the default range: four weeks, today included


async def check_a_range(page: Page, day: Day) -> None:
    """Choosing a range of one earlier day shows that day's calls and minutes only."""
    saturday = day.earlier[Weekday.SATURDAY]
    shown = to_jalali(saturday).strftime("%Y/%m/%d")
    await page.fill('#range input[name="from"]', shown)
    await page.fill('#range input[name="to"]', shown)
    async with page.expect_navigation():
        await page.click('#range button[type="submit"]')
    saturday_calls = {cell_: n for cell_, n in EARLIER_CALLS.items() if cell_[0] is
                      Weekday.SATURDAY}
    for (weekday, hour), count in saturday_calls.items():
        assert await cell(page, weekday, hour) == digits(count, "fa")
    if day.here not in saturday_calls:  # today's calls are out of the range
        assert await cell(page, *day.here) == ""
    assert await cell(page, Weekday.SUNDAY, 0) == ""  # the other earlier day's calls too
    assert await page.locator("#heatmap td[data-count]:not([data-count='0'])").count() == len(
        saturday_calls)
    rows = page.locator("#minutes tr")
    assert await rows.count() == 1
    assert (await rows.inner_text()).split()[-1] == digits(day.minutes[saturday], "fa")
    assert await page.input_value('#range input[name="from"]') == shown


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def metric_samples(server: ServerProcess) -> Samples:
    """/metrics read with Prometheus' own parser: each sample's value by name and labels."""
    _, text = await get(server, "/metrics")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def get(server: ServerProcess, path: str, token: str | None = TOKEN
              ) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(server.base_url + path,
                                                         headers=headers) as reply:
        return reply.status, await reply.text()


async def test_api_status_and_metrics_agree_with_the_day(tmp_path: Path) -> None:
    async with scripted_day(tmp_path) as day:
        server = day.server
        status, _ = await get(server, "/api/status", token=None)
        assert status == 401
        async with aiohttp.ClientSession() as http, http.get(
                server.base_url + "/api/status",
                headers={"Authorization": f"Bearer {TOKEN}"}) as reply:
            body = await reply.json()
        figures = body["today_figures"]
        assert (figures["calls"], figures["bookings"], figures["cancellations"]) == (
            day.calls, day.bookings, day.cancellations)
        assert figures["failed"] == [{"cause": "patient: no_answer", "count": 1}]
        assert body["health"]["ami"] == "connected" and body["health"]["ok"] is True
        for (weekday, hour), count in day.heatmap.items():
            assert body["heatmap"]["counts"][weekday][hour] == count
        [upcoming] = body["upcoming"]
        assert (upcoming["doctor_en"], upcoming["patient"]) == (HTML_NAME, "*******2233")
        for talked_on, minutes in day.minutes.items():
            assert {"day": talked_on.isoformat(), "minutes": minutes} in body[
                "consultation_minutes"]

        status, text = await get(server, "/metrics")
        assert status == 200
        async with aiohttp.ClientSession() as http, http.get(
                server.base_url + "/metrics",
                headers={"Authorization": f"Bearer {TOKEN}"}) as reply:
            assert reply.headers["Content-Type"] == CONTENT_TYPE_LATEST
        families = {f.name: f for f in text_string_to_metric_families(text)}
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in families.values() for s in f.samples}
        assert samples[("nobat_ami_state", (("state", "connected"),))] == 1
        assert samples[("nobat_up", ())] == 1
        assert samples[("nobat_today", (("figure", "calls"),))] == day.calls
        assert samples[("nobat_today", (("figure", "resumed_attempts"),))] == 0  # no blip
        assert samples[("nobat_consultations", (("state", "missed"),))] == 1
        assert samples[("nobat_ivr_call_duration_seconds_count", ())] == len(IVR_CALLERS)
        assert samples[("nobat_consultations", (("state", "bridged"),))] == 1
        assert samples[("nobat_consultation_dispatch_lag_seconds_count", ())] == 3
        # The IVR callers' waits, and the in-call surveys' too (also FastAGI).
        assert samples[("nobat_agi_turnaround_seconds_count", ())] >= day.ivr_turnarounds > 10
        assert all(number not in text for number in PHONES)
        status, _ = await get(server, "/metrics", token="wrong")
        assert status == 401


async def test_only_healthz_is_open_and_the_reload_form_needs_its_csrf_value(
        tmp_path: Path) -> None:
    server = await ServerProcess(demo_copy(tmp_path), env={"NOBAT_WEB_TOKEN": TOKEN}).start()
    try:
        for path in ("/", "/api/status", "/metrics", "/api/flows"):
            assert (await get(server, path, token=None))[0] == 401, path
        assert (await get(server, "/healthz", token=None))[0] == 200
        assert (await get(server, "/api/status?from=1405/13/01"))[0] == 400
        status, page = await get(server, "/?lang=en&from=2026-12-01&to=2026-11-01")
        assert status == 400 and "Wrong range" in page and "first day is after its last" in page
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.post(server.base_url + "/login", data={"token": "nope"}) as reply:
                assert reply.status == 401
            async with http.post(server.base_url + "/login", data={"token": TOKEN},
                                 allow_redirects=False) as reply:
                assert reply.status == 303
                cookie = reply.cookies["nobat_session"]
                assert cookie.value != TOKEN and cookie["httponly"]
                assert cookie["samesite"] == "Strict"
            async with http.get(server.base_url + "/") as reply:
                assert reply.status == 200
                page = await reply.text()
            # A form posted from another site carries the cookie but not the page's value.
            async with http.post(server.base_url + "/reload", data={}) as reply:
                assert reply.status == 403
            csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            async with http.post(server.base_url + "/reload", data={"csrf": csrf},
                                 allow_redirects=False) as reply:
                assert reply.status == 303
        assert all(TOKEN not in line for line in server.log)
    finally:
        assert await server.stop() == 0


async def a_booking_on_a_closed_day(folder: Path) -> tuple[int, int, dt.date]:
    """The store beside `folder`'s config: one booking and its doctor's absence that day,
    recorded as the page records it; the booking's id, the absence's id and the day."""
    database = Database.from_url(f"sqlite+aiosqlite:///{folder / 'nobat.db'}")
    try:
        await upgrade(database)
        await load_clinic(database, read_clinic(folder / "clinic.toml"))
        service = BookingService(database)
        doctor_id, start = await first_phone_slot(service, "dr-ahmadi")
        booked = await service.book("09121234567", doctor_id, start, VisitKind.PHONE)
        assert isinstance(booked, Booked)
        day = start.astimezone(TEHRAN_ZONE).date()
        assert await record_absence(database, "dr-ahmadi", day, day, "conference") == 1
        [absence] = await recorded_absences(database, day)
        return booked.appointment.id, absence.id, day
    finally:
        await database.close()


async def listed(server: ServerProcess) -> tuple[list[int], list[int]]:
    """What the page lists: bookings on closed days, and absences recorded on the page."""
    status, text = await get(server, "/api/status")
    assert status == 200
    body = json.loads(text)
    return ([a["appointment_id"] for a in body["absences"]],
            [a["id"] for a in body["recorded_absences"]])


@pytest.mark.parametrize("path", ["/absences", "/absences/cancel", "/absences/lift",
                                  "/logout"])
async def test_a_write_needs_the_token_and_with_the_cookie_the_pages_csrf_value(
        tmp_path: Path, path: str) -> None:
    config = demo_copy(tmp_path)
    appointment, closure, day = await a_booking_on_a_closed_day(tmp_path)
    form = {"/absences": {"doctor": "", "first": (day + dt.timedelta(days=1)).isoformat(),
                          "reason": "closed"},
            "/absences/cancel": {"appointment": str(appointment)},
            "/absences/lift": {"closure": str(closure)}, "/logout": {}}[path]
    server = await ServerProcess(config, env={"NOBAT_WEB_TOKEN": TOKEN}).start()
    url = server.base_url + path
    try:
        before = await listed(server)
        assert before == ([appointment], [closure])
        async with aiohttp.ClientSession() as http, http.post(
                url, data=form, allow_redirects=False) as reply:
            assert reply.status == 401  # neither the cookie nor the token
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.post(server.base_url + "/login", data={"token": TOKEN}) as reply:
                assert reply.status == 200
                page = await reply.text()
            csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            # Another site's form carries the cookie, but not the page's value.
            for forged in ({}, {"csrf": "0" * len(csrf)}):
                async with http.post(url, data={**form, **forged},
                                     allow_redirects=False) as reply:
                    assert reply.status == 403, forged
            assert await listed(server) == before
            async with http.get(server.base_url + "/") as reply:
                assert reply.status == 200  # still logged in
            # The page's own form does what it says: the refusals were the guard's.
            async with http.post(url, data={**form, "csrf": csrf},
                                 allow_redirects=False) as reply:
                assert reply.status == 303
            if path == "/logout":
                async with http.get(server.base_url + "/") as reply:
                    assert reply.status == 401
            else:
                assert await listed(server) != before
    finally:
        assert await server.stop() == 0


async def test_the_page_shows_a_wrong_ami_secret_and_a_refused_flows_edit(
        tmp_path: Path, artifacts: Path) -> None:
    config = demo_copy(tmp_path)
    shutil.copytree(ROOT / "flows", tmp_path / "flows")
    users = nobat_user("the-right-secret")
    async with FakeAsterisk(users=users, speed=0.1) as pbx:
        edit_config(config, (f'flows = "{ROOT / "flows"}"', 'flows = "flows"'),
                    ("watch_seconds = 2", "watch_seconds = 0"),
                    ("port = 5038", f"port = {pbx.port}"))
        server = await ServerProcess(config, env={"NOBAT_WEB_TOKEN": TOKEN,
                                                  "NOBAT_AMI_SECRET": "a-wrong-secret"}).start()
        try:
            health = await settled_health(server)
            assert (health["ami"], health["ami_error"], health["ok"]) == (
                "auth_failed", "Authentication failed", False)
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                           args=["--no-sandbox"])
                try:
                    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                    await check_health_errors(page, server, tmp_path / "flows")
                    await page.screenshot(path=str(artifacts / "status-health-errors.png"),
                                          full_page=True)
                finally:
                    await browser.close()
            samples = await metric_samples(server)
            assert samples[("nobat_ami_state", (("state", "auth_failed"),))] == 1
            assert samples[("nobat_up", ())] == 0
            assert all("a-wrong-secret" not in line for line in server.log)
        finally:
            assert await server.stop() == 0


async def settled_health(server: ServerProcess) -> dict[str, object]:
    """The health part of /api/status once the first AMI login has been answered."""
    async with asyncio.timeout(15):
        while True:
            status, text = await get(server, "/api/status")
            health: dict[str, object] = json.loads(text)["health"]
            if status == 200 and health["ami"] not in ("connecting", "stopped"):
                return health
            await asyncio.sleep(0.1)


async def check_health_errors(page: Page, server: ServerProcess, flows: Path) -> None:
    """The health table as an admin reads it: the AMI refusal, then a broken flows edit."""
    await page.goto(server.base_url + "/")
    await page.fill('input[name="token"]', TOKEN)
    await page.click('button[type="submit"]')
    await page.wait_for_selector("#today")
    ami = page.locator('#health tr[data-part="ami"] td')
    assert "رمز AMI نادرست" in await ami.inner_text()  # "wrong AMI secret"
    assert await ami.get_attribute("class") == "bad"
    assert await page.locator("#ami-error").inner_text() == "Authentication failed"
    assert "a-wrong-secret" not in await page.content()
    version = await page.locator('#health tr[data-part="flows"] td').inner_text()
    assert "main@" in version
    assert await page.locator('#health tr[data-part="flows-error"]').count() == 0

    edit(flows, ADDRESS_KEY, BROKEN_KEY)  # staff break the main menu and press reload
    await page.click("#reload")
    error = page.locator('#health tr[data-part="flows-error"] td')
    shown = await error.inner_text()
    assert f"{flows / 'main.toml'}:" in shown and "no node 'adress' in this flow" in shown
    assert await error.get_attribute("class") == "bad error"
    assert await page.locator('#health tr[data-part="flows"] td').inner_text() == version


async def test_staff_record_an_absence_decide_on_its_booking_and_read_the_survey(
        tmp_path: Path, artifacts: Path) -> None:
    config = demo_copy(tmp_path)
    # Callers' changes close a week before a visit: the office's cancel below still goes
    # through, since the configured rules give staff no cut-off.
    edit_config(config, ("change_cutoff_minutes = 120", "change_cutoff_minutes = 10080"))
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'nobat.db'}")
    await upgrade(database)
    await load_clinic(database, read_clinic(tmp_path / "clinic.toml"))
    service = BookingService(database)
    doctor_id, start = await first_phone_slot(service, "dr-ahmadi")
    booked = await service.book("09121234567", doctor_id, start, VisitKind.PHONE)
    other = await service.book("09121234568", doctor_id, start + dt.timedelta(minutes=30),
                               VisitKind.PHONE)
    assert isinstance(booked, Booked) and isinstance(other, Booked)
    assert start - dt.datetime.now(dt.UTC) < dt.timedelta(days=7)  # within the cut-off
    surveys = SurveyStore(database)
    for appointment, (audio, rating, again) in ((booked, (3, 5, True)), (other, (4, 4, False))):
        for question, value in (("audio", audio), ("doctor", rating), ("book_again", again)):
            await surveys.answer(appointment.appointment.id, question, value)
    async with database.writing() as session:
        now = dt.datetime.now(dt.UTC)
        session.add(PatientCall(appointment_id=other.appointment.id, purpose="reminder",
                                subject="", due_at=now, not_after=now, state="done",
                                attempts=1, outcome="confirmed", updated_at=now))
    day = start.astimezone(TEHRAN_ZONE).date()
    server = await ServerProcess(config, env={"NOBAT_WEB_TOKEN": TOKEN}).start()
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                       args=["--no-sandbox"])
            context = await browser.new_context(viewport={"width": 1400, "height": 1000})
            page = await context.new_page()
            await page.goto(server.base_url + "/")
            await page.fill('input[name="token"]', TOKEN)
            await page.click('button[type="submit"]')
            await page.wait_for_selector("#today")

            # The survey: averages per doctor and per week, in Persian digits.
            ahmadi = await page.locator("#survey-doctors tr[data-label]").inner_text()
            assert "۲" in ahmadi and "۳٫۵" in ahmadi and "۴٫۵" in ahmadi and "۵۰%" in ahmadi
            assert await page.locator("#survey-weeks tr[data-label]").count() == 1
            assert "تأیید کرد" in await page.locator("#patient-calls").inner_text()

            # A wrong date is refused with its reason (400); nothing is recorded.
            await page.fill('#record-absence input[name="first"]', "1405/13/40")
            async with page.expect_navigation() as refused_reply:
                await page.click('#record-absence button[type="submit"]')
            assert (await refused_reply.value).status == 400
            assert "«1405/13/40» تاریخ نیست" in await page.locator("#problem").inner_text()
            await page.click("#back")
            await page.wait_for_selector("#today")

            # The doctor's absence on the booked day: both bookings listed, not called yet.
            await page.select_option('#record-absence select[name="doctor"]', "dr-ahmadi")
            await page.fill('#record-absence input[name="first"]',
                            to_jalali(day).strftime("%Y/%m/%d"))
            await page.fill('#record-absence input[name="reason"]', "<b>conference</b>")
            await page.click('#record-absence button[type="submit"]')
            assert "۲" in await page.locator("#notice").inner_text()
            listed = await page.locator("#absences").inner_text()
            assert "*******۴۵۶۷" in listed and "هنوز تماس گرفته نشده" in listed
            assert "09121234567" not in await page.content()
            await page.screenshot(path=str(artifacts / "status-absences.png"), full_page=True)

            # The office decides: cancel the first booking.
            await page.locator(f'#absences tr[data-appointment="{booked.appointment.id}"] '
                               'button').click()
            notice = await page.locator("#notice").inner_text()
            assert digits(booked.appointment.code, "fa") in notice
            assert await page.locator("#absences tr[data-appointment]").count() == 1
            async with database.reading() as session:
                [closure] = (await session.scalars(
                    select(Closure).where(Closure.source == "page"))).all()
            assert (closure.first_day, closure.reason) == (day, "<b>conference</b>")
            recorded = await page.locator("#recorded-absences").inner_text()
            assert "<b>conference</b>" in recorded  # staff text shows as text

            # The doctor comes after all: the absence is lifted, no booking is listed.
            stale = await context.new_page()  # another tab, loaded before the lift
            await stale.goto(server.base_url + "/")
            await page.locator(f'#recorded-absences tr[data-closure="{closure.id}"] '
                               'button').click()
            assert "برداشته شد" in await page.locator("#notice").inner_text()
            assert await page.locator("#absences").inner_text() == "هیچ"
            assert await page.locator("#recorded-absences").count() == 0

            # That tab still offers to cancel the other booking: refused, it is no longer on
            # a closed day (the booking is checked below: still booked).
            await stale.locator(f'#absences tr[data-appointment="{other.appointment.id}"] '
                                'button').click()
            refused = stale.locator("#notice")
            assert "در روز تعطیل یا غیبت پزشک نیست" in await refused.inner_text()
            assert await refused.get_attribute("class") == "bad"
            # A live booking's code, which proves a caller, never lands in a URL.
            assert other.appointment.code not in stale.url
            await browser.close()
        samples = await metric_samples(server)
        assert samples[("nobat_patient_calls_today",
                        (("outcome", "confirmed"), ("purpose", "reminder")))] == 1
        status, api = await get(server, "/api/status")
        assert status == 200 and '"book_again": 0.5' in api
        kept = await service.appointment(other.appointment.id)
        gone = await service.appointment(booked.appointment.id)
        assert kept is not None and kept.status == "booked"
        assert gone is not None and gone.status == "cancelled"
        async with database.reading() as session:
            assert (await session.scalars(select(Closure).where(
                Closure.source == "page"))).all() == []
    finally:
        assert await server.stop() == 0
        await database.close()
