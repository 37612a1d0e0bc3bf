"""The status page in platform mode: two practices in one store, each practice's staff with
their own token (`nobat page-token`), the platform admin with config.toml's. Staff see and
change only their own practice's rows, on every route; another practice's ids get 404 and
change nothing; the admin sees both, each row named by its practice."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
from playwright.async_api import async_playwright
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, insert, select

from clinic.clinic_file import read_clinic
from clinic.schedule import VisitKind
from db.booking import Booked, BookingService
from db.clinic_sync import load_clinic, record_absence, recorded_absences
from db.engine import Database
from db.models import (
    Appointment,
    CallAttempt,
    Clinic,
    Closure,
    Consultation,
    InboundCall,
    PatientCall,
)
from db.schema import upgrade
from tests.security.wire import log_in, post_form
from tests.support.clinic_day import TOKEN
from tests.support.clinics import second_practice
from tests.support.consultations import first_phone_slot
from tests.support.server import ServerProcess, demo_copy, edit_config
from tests.test_status_page import CHROMIUM, TEHRAN_ZONE

TEHRAN, SHIRAZ = "nobat-demo", "shiraz-eye"
PATIENTS = {TEHRAN: "09121234567", SHIRAZ: "09127654321"}
MASKED = {TEHRAN: "*******4567", SHIRAZ: "*******4321"}
CALLS = {TEHRAN: 2, SHIRAZ: 1}
TALKED = {TEHRAN: 120, SHIRAZ: 300}
"""Seconds each practice's consultation talked today."""
REMINDED = {TEHRAN: "confirmed", SHIRAZ: "cancelled"}
"""What each practice's patient chose in today's reminder."""


@dataclass
class Held:
    """One practice's rows in the store: a booking on a day its doctor is away, that
    absence (recorded on the page), and its staff token."""

    appointment: int
    closure: int
    token: str


@dataclass
class Platform:
    server: ServerProcess
    database: Database
    config: Path
    held: dict[str, Held]


async def make_token(config: Path, practice: str) -> tuple[int, str, str]:
    """`nobat page-token PRACTICE`: its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nobat", "-c", str(config), "page-token", practice,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def hold(database: Database, config: Path, practice: str) -> Held:
    service = BookingService(database, practice=practice)
    doctor_id, start = await first_phone_slot(service, "dr-ahmadi")
    booked = await service.book(PATIENTS[practice], doctor_id, start, VisitKind.PHONE)
    assert isinstance(booked, Booked)
    day = start.astimezone(TEHRAN_ZONE).date()
    assert await record_absence(database, "dr-ahmadi", day, day, "away", practice) == 1
    async with database.reading() as session:
        clinic = await session.scalar(select(Clinic.id).where(Clinic.key == practice))
    [absence] = await recorded_absences(database, day, clinic)
    now = dt.datetime.now(dt.UTC)
    async with database.writing() as session:
        await session.execute(insert(InboundCall), [
            {"started_at": now, "ended_at": now, "language": "fa", "outcome": "completed",
             "clinic_id": clinic}] * CALLS[practice])
        await session.execute(insert(PatientCall).values(
            appointment_id=booked.appointment.id, purpose="reminder", due_at=now,
            not_after=now, state="done", outcome=REMINDED[practice], attempts=1,
            updated_at=now))
        consultation = await session.scalar(select(Consultation.id).where(
            Consultation.appointment_id == booked.appointment.id))
        await session.execute(insert(CallAttempt).values(
            consultation_id=consultation, number=1, state="completed", doctor_channel_id="d",
            patient_channel_id="p", started_at=now, ended_at=now, outcome="completed",
            talk_seconds=TALKED[practice]))
    code, token, _ = await make_token(config, practice)
    assert code == 0
    return Held(booked.appointment.id, absence.id, token.strip())


@asynccontextmanager
async def platform(tmp_path: Path, shiraz_zone: str = "Asia/Tehran"
                   ) -> AsyncIterator[Platform]:
    """`nobat serve` on a clinic folder of two practices, each with a booking on a closed
    day, a recorded absence, inbound calls today and a staff token; the second practice's
    clock is `shiraz_zone`'s."""
    config = demo_copy(tmp_path)
    clinics = tmp_path / "clinics"
    clinics.mkdir()
    shutil.move(tmp_path / "clinic.toml", clinics / "tehran.toml")
    (clinics / "shiraz.toml").write_text(second_practice(SHIRAZ).replace(
        'timezone = "Asia/Tehran"', f'timezone = "{shiraz_zone}"'), encoding="utf-8")
    edit_config(config, ('clinic_file = "clinic.toml"', 'clinic_file = "clinics"'))
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'nobat.db'}")
    await upgrade(database)
    for name in ("tehran.toml", "shiraz.toml"):
        await load_clinic(database, read_clinic(clinics / name))
    held = {practice: await hold(database, config, practice) for practice in (TEHRAN, SHIRAZ)}
    server = await ServerProcess(config, env={"NOBAT_WEB_TOKEN": TOKEN}).start()
    try:
        yield Platform(server, database, config, held)
    finally:
        assert await server.stop() == 0
        assert all(h.token not in line for h in held.values() for line in server.log)
        await database.close()


async def get(server: ServerProcess, path: str, token: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(
            server.base_url + path, headers={"Authorization": f"Bearer {token}"}) as reply:
        return reply.status, await reply.text()


async def api(server: ServerProcess, token: str) -> dict[str, object]:
    status, text = await get(server, "/api/status", token)
    assert status == 200
    body: dict[str, object] = json.loads(text)
    return body


async def state(database: Database) -> tuple[list[str], int]:
    """What a refused request must leave as it was: every booking's status and how many
    closures the page recorded."""
    async with database.reading() as session:
        statuses = list((await session.scalars(select(Appointment.status)
                                               .order_by(Appointment.id))).all())
        closures = await session.scalar(select(func.count()).select_from(Closure)
                                         .where(Closure.source == "page")) or 0
    return statuses, closures


async def test_a_practices_token_sees_its_own_rows_and_the_admins_sees_all(
        tmp_path: Path) -> None:
    async with platform(tmp_path) as p:
        for practice, other in ((TEHRAN, SHIRAZ), (SHIRAZ, TEHRAN)):
            body = await api(p.server, p.held[practice].token)
            assert [a["appointment_id"] for a in body["absences"]] == [  # type: ignore[index]
                p.held[practice].appointment]
            assert [a["id"] for a in body["recorded_absences"]] == [  # type: ignore[index]
                p.held[practice].closure]
            assert [u["patient"] for u in body["upcoming"]] in (  # type: ignore[index]
                [], [MASKED[practice]])
            figures = body["today_figures"]
            assert figures["calls"] == CALLS[practice]  # type: ignore[index]
            assert figures["bookings"] == 1  # type: ignore[index]
            assert (figures["completed_consultations"],  # type: ignore[index]
                    figures["consultation_minutes"]) == (1, TALKED[practice] / 60)  # type: ignore[index]
            assert [m["minutes"] for m in body["consultation_minutes"]  # type: ignore[attr-defined]
                    if m["minutes"]] == [TALKED[practice] / 60]
            assert body["patient_calls"] == [  # an answered reminder of its own, no other's
                {"purpose": "reminder", "outcome": REMINDED[practice], "count": 1}]
            assert [x["key"] for x in body["practices"]] == [practice]  # type: ignore[index]
            assert MASKED[other] not in json.dumps(body)
        admin = await api(p.server, TOKEN)
        assert sorted(a["appointment_id"] for a in admin["absences"]) == sorted(  # type: ignore[index]
            h.appointment for h in p.held.values())
        assert {a["practice"] for a in admin["absences"]} == {TEHRAN, SHIRAZ}  # type: ignore[index]
        assert admin["today_figures"]["calls"] == sum(CALLS.values())  # type: ignore[index]
        assert admin["today_figures"]["consultation_minutes"] == sum(  # type: ignore[index]
            TALKED.values()) / 60
        assert sorted(c["outcome"] for c in admin["patient_calls"]) == sorted(  # type: ignore[attr-defined]
            REMINDED.values())
        assert [x["key"] for x in admin["practices"]] == [TEHRAN, SHIRAZ]  # type: ignore[index]


async def test_a_practices_token_on_the_platforms_routes_is_refused(tmp_path: Path) -> None:
    async with platform(tmp_path) as p:
        staff = p.held[SHIRAZ].token
        for path in ("/metrics", "/api/flows"):
            assert (await get(p.server, path, staff))[0] == 403, path
        async with aiohttp.ClientSession() as http, http.post(
                p.server.base_url + "/api/flows/reload",
                headers={"Authorization": f"Bearer {staff}"}) as reply:
            assert reply.status == 403
        login = await log_in(p.server, staff)
        assert (await post_form(p.server, "/reload", login)).status == 403
        # The admin's /metrics: the per-call series carry the practice's key.
        status, text = await get(p.server, "/metrics", TOKEN)
        assert status == 200
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(text) for s in f.samples}
        for practice in (TEHRAN, SHIRAZ):
            assert samples[("nobat_consultations",
                            (("practice", practice), ("state", "scheduled")))] == 1
            assert samples[("nobat_ivr_calls_active", (("practice", practice),))] == 0
        assert ("nobat_ivr_call_duration_seconds_count", (("practice", ""),)) in samples
        assert sorted((labels, value) for (name, labels), value in samples.items()
                      if name == "nobat_patient_calls_today") == sorted(
            ((("outcome", outcome), ("practice", practice), ("purpose", "reminder")), 1)
            for practice, outcome in REMINDED.items())


async def test_another_practices_ids_get_404_and_change_nothing(tmp_path: Path) -> None:
    async with platform(tmp_path) as p:
        theirs = p.held[TEHRAN]
        login = await log_in(p.server, p.held[SHIRAZ].token)
        before = await state(p.database)
        forged = [("/absences/cancel", ("appointment", str(theirs.appointment))),
                  ("/absences/lift", ("closure", str(theirs.closure))),
                  ("/absences/cancel", ("appointment", "999999")),
                  ("/absences/lift", ("closure", "999999"))]
        for path, field in forged:
            reply = await post_form(p.server, path, login, field)
            assert reply.status == 404, (path, field)
        day = dt.datetime.now(TEHRAN_ZONE).date() + dt.timedelta(days=1)
        record = [("first", day.isoformat()), ("last", day.isoformat()), ("reason", "x")]
        reply = await post_form(p.server, "/absences", login, ("practice", TEHRAN), *record)
        assert reply.status == 404
        assert await state(p.database) == before
        # Their own: recorded for their practice, whatever practice the admin's form would name.
        reply = await post_form(p.server, "/absences", login, *record)
        assert reply.status == 303
        mine = await api(p.server, p.held[SHIRAZ].token)
        assert len(mine["recorded_absences"]) == 2  # type: ignore[arg-type]
        assert len((await api(p.server, p.held[TEHRAN].token))[
            "recorded_absences"]) == 1  # type: ignore[arg-type]
        own = await post_form(p.server, "/absences/cancel", login,
                              ("appointment", str(p.held[SHIRAZ].appointment)))
        assert (own.status, own.header("Location").split("&")[0]) == (
            303, "/?notice=cancelled")
        assert (await state(p.database))[0].count("cancelled") == 1
        # The admin acts on either practice.
        admin = await log_in(p.server, TOKEN)
        lifted = await post_form(p.server, "/absences/lift", admin,
                                 ("closure", str(theirs.closure)))
        assert (lifted.status, lifted.header("Location")) == (303, "/?notice=absence_lifted")


async def test_a_new_token_replaces_the_old_and_ends_its_sessions(tmp_path: Path) -> None:
    async with platform(tmp_path) as p:
        old = p.held[SHIRAZ].token
        login = await log_in(p.server, old)
        code, new, err = await make_token(p.config, SHIRAZ)
        assert code == 0 and new.strip() != old and new.strip() not in err
        assert (await get(p.server, "/api/status", old))[0] == 401
        async with aiohttp.ClientSession() as http, http.get(
                p.server.base_url + "/api/status", headers=[login.header]) as reply:
            assert reply.status == 401
        assert (await get(p.server, "/api/status", new.strip()))[0] == 200
        code, out, err = await make_token(p.config, "no-such-practice")
        assert (code, out) == (2, "") and "no practice 'no-such-practice'" in err


async def test_the_page_in_a_browser_shows_each_practice_its_own(tmp_path: Path) -> None:
    async with platform(tmp_path) as p, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                   args=["--no-sandbox"])
        try:
            for token, rows, named in ((p.held[SHIRAZ].token, [SHIRAZ], False),
                                       (p.held[TEHRAN].token, [TEHRAN], False),
                                       (TOKEN, [TEHRAN, SHIRAZ], True)):
                page = await browser.new_page()
                await page.goto(p.server.base_url + "/?lang=en")
                await page.fill('input[name="token"]', token)
                await page.click('button[type="submit"]')
                await page.wait_for_selector("#today")
                shown = page.locator("#absences tr[data-appointment]")
                assert sorted([await row.get_attribute("data-appointment")
                               for row in await shown.all()]) == sorted(
                    str(p.held[key].appointment) for key in rows)
                text = await page.locator("body").inner_text()
                for key in (TEHRAN, SHIRAZ):
                    assert (MASKED[key] in text) == (key in rows)
                assert (await page.locator("td.practice").count() > 0) == named
                assert (await page.locator("#reload").count() > 0) == named
                if named:
                    assert "Shiraz Eye Practice" in await page.locator(
                        "#absences").inner_text()
                await page.close()
        finally:
            await browser.close()


async def test_login_as_a_practice_is_throttled_like_the_admins(tmp_path: Path) -> None:
    async with platform(tmp_path) as p:
        for _ in range(4):
            assert (await get(p.server, "/api/status", "wrong-token-0000-aaaa"))[0] == 401
        status, _ = await get(p.server, "/api/status", p.held[SHIRAZ].token)
        assert status == 429  # locked out: the right token waits too


async def test_a_practices_staff_see_their_own_clock_and_the_admin_the_lines(
        tmp_path: Path) -> None:
    """A practice an hour ahead of the line's first (Kabul, Tehran): its staff read its
    bookings' times in its own zone; the admin, who sees every practice, in the line's."""
    async with platform(tmp_path, shiraz_zone="Asia/Kabul") as p:
        ident = p.held[SHIRAZ].appointment
        async with p.database.reading() as session:
            start = await session.scalar(select(Appointment.start_at)
                                         .where(Appointment.id == ident))
        assert start is not None
        for token, zone in ((p.held[SHIRAZ].token, "Asia/Kabul"), (TOKEN, "Asia/Tehran")):
            status, body = await get(p.server, "/?lang=en", token)
            assert status == 200
            row = re.search(rf'<tr data-appointment="{ident}">.*?(\d\d:\d\d)', body)
            assert row is not None
            assert row.group(1) == start.astimezone(ZoneInfo(zone)).strftime("%H:%M")
            clock = re.search(r'<span id="today-date">[^<]*(\d\d:\d\d)</span>', body)
            assert clock is not None
            now = dt.datetime.now(ZoneInfo(zone))
            assert clock.group(1) in {(now + dt.timedelta(minutes=m)).strftime("%H:%M")
                                      for m in (-1, 0)}
