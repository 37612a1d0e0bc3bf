"""When the dialer cannot ring what is due, /healthz fails and the page says so, in both
languages, and both say it works again once it does: `nobat serve` against the fake PBX,
its SQLite store locked by another process (a backup, an sqlite3 shell left in a
transaction), read in headless Chromium."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
from pathlib import Path

from playwright.async_api import Page, async_playwright

from db.booking import BookingService
from tests.fakepbx.ami_server import FakeAsterisk, nobat_user
from tests.fakepbx.script import Answers, Phone
from tests.support.clinic_day import AMI_SECRET, TOKEN
from tests.support.consultations import book_due, consultation, first_phone_slot
from tests.support.server import ServerProcess, demo_copy, demo_store, dial_fake_pbx
from tests.test_status_page import CHROMIUM, artifacts, get, metric_samples

PATIENT = "09351110009"
DUE_IN = dt.timedelta(seconds=8)
__all__ = ["artifacts"]  # the fixture, used by name


async def healthz(server: ServerProcess) -> tuple[int, dict[str, object]]:
    status, text = await get(server, "/healthz", token=None)
    return status, json.loads(text)


async def until_healthz(server: ServerProcess, status: int, dialer: str,
                        seconds: float = 30.0) -> dict[str, object]:
    """/healthz once it answers `status` with the dialer in state `dialer`."""
    async with asyncio.timeout(seconds):
        while True:
            code, body = await healthz(server)
            parts = body.get("parts")
            if code == status and isinstance(parts, dict) and parts["dialer"]["state"] == dialer:
                return body
            await asyncio.sleep(0.1)


async def dialer_row(page: Page, lang: str) -> tuple[str, str | None]:
    await page.goto(page.url.split("?")[0] + f"?lang={lang}")
    cell = page.locator('#health tr[data-part="part-dialer"] td')
    return await cell.inner_text(), await cell.get_attribute("class")


async def test_healthz_and_the_page_tell_when_the_dialer_cannot_ring_what_is_due(
        tmp_path: Path, artifacts: Path) -> None:
    config = demo_copy(tmp_path)
    phones = [Phone("09121002002", "+989121002002", Answers(0.2), "Dr Karimi"),
              Phone(PATIENT, "+98" + PATIENT[1:], Answers(0.3, talk=20), "Patient")]
    users = nobat_user(AMI_SECRET)
    async with FakeAsterisk(users=users, phones=phones, speed=0.1) as pbx:
        dial_fake_pbx(config, pbx.port, ("ring_seconds = 45", "ring_seconds = 5"),
                      ("poll_seconds = 5", "poll_seconds = 0.2"),
                      ("busy_timeout_seconds = 30", "busy_timeout_seconds = 0.5"))
        database = await demo_store(tmp_path)
        service = BookingService(database)
        doctor_id, start = await first_phone_slot(service, "dr-karimi")
        due = dt.datetime.now(dt.UTC) + DUE_IN
        _, ident = await book_due(service, database, doctor_id, PATIENT, start, due)
        server = await ServerProcess(config, env={"NOBAT_WEB_TOKEN": TOKEN,
                                                  "NOBAT_AMI_SECRET": AMI_SECRET}).start()
        lock = sqlite3.connect(tmp_path / "nobat.db", isolation_level=None)
        try:
            await until_healthz(server, 200, "running")
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                           args=["--no-sandbox"])
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                await page.goto(server.base_url + "/")
                await page.fill('input[name="token"]', TOKEN)
                await page.click('button[type="submit"]')
                await page.wait_for_selector("#today")
                assert (await dialer_row(page, "fa"))[1] == "ok"
                rows = page.locator('#health tr[data-part^="part-"]')
                assert await rows.evaluate_all("rs => rs.map(r => r.dataset.part)") == [
                    "part-fastagi", "part-status_page", "part-ami", "part-dialer",
                    "part-planner", "part-flow_watcher"]
                planner = page.locator('#health tr[data-part="part-planner"] th')
                assert await planner.inner_text() == ("برنامه‌ریز تماس با بیماران (یادآوری‌ها، "
                                                      "غیبت‌ها، نظرسنجی‌ها)")
                fastagi = page.locator('#health tr[data-part="part-fastagi"]')
                assert await fastagi.locator("th").inner_text() == "درگاه FastAGI (تماس‌های ورودی)"
                assert await fastagi.locator("td").get_attribute("class") == "ok"

                lock.execute("BEGIN IMMEDIATE")  # another process holds the write lock
                down = await until_healthz(server, 503, "failing",
                                           seconds=DUE_IN.total_seconds() + 30)
                assert down["status"] == "error" and down["database"] == "ok"
                assert down["due_unserved"] == 1
                assert "last_error" not in down["parts"]["dialer"]  # type: ignore[index]
                _, api = await get(server, "/api/status")
                [dialer] = [part for part in json.loads(api)["health"]["parts"]
                            if part["name"] == "dialer"]
                assert dialer["state"] == "failing"
                assert "database is locked" in dialer["last_error"]
                text, css = await dialer_row(page, "fa")
                assert css == "bad" and "از کار می‌افتد" in text and "database is locked" in text
                unserved = page.locator('#health tr[data-part="due-unserved"] td')
                assert await unserved.inner_text() == "۱"
                text, css = await dialer_row(page, "en")
                assert css == "bad" and "keeps failing" in text and "since" in text
                await page.screenshot(path=str(artifacts / "status-dialer-failing.png"),
                                      full_page=True)
                samples = await metric_samples(server)
                assert samples[("nobat_part_up", (("part", "dialer"),))] == 0
                assert samples[("nobat_consultations_due_unserved", ())] == 1
                assert (await consultation(database, ident)).state == "scheduled"

                lock.execute("ROLLBACK")  # the lock is gone: the next round rings both
                back = await until_healthz(server, 200, "running")
                assert "due_unserved" not in back
                async with asyncio.timeout(30):
                    while True:
                        if (await consultation(database, ident)).state == "completed":
                            break
                        await asyncio.sleep(0.1)
                text, css = await dialer_row(page, "en")
                assert css == "ok" and "database is locked" not in text
                assert await page.locator('#health tr[data-part="due-unserved"]').count() == 0
                await browser.close()
        finally:
            lock.close()
            assert await server.stop() == 0
            await database.close()
