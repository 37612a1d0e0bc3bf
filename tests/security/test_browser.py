"""The probes a browser makes, in Debian's headless Chromium: the page works under its strict
Content-Security-Policy (nothing refused, forms posting with the browser's own Origin), a
page reached through DNS rebinding is refused, and a locked-out login is told so."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
from playwright.async_api import ConsoleMessage, async_playwright

from tests.security.wire import TOKEN, page_server

CHROMIUM = os.environ.get("NOBAT_CHROMIUM", "/usr/bin/chromium")
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


async def test_the_page_works_under_its_policy_and_its_forms_pass_the_origin_check(
        tmp_path: Path) -> None:
    tomorrow = dt.datetime.now(ZoneInfo("Asia/Tehran")).date() + dt.timedelta(days=1)
    async with page_server(tmp_path) as server, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                   args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            console: list[str] = []

            def heard(message: ConsoleMessage) -> None:
                console.append(message.text)

            page.on("console", heard)
            reply = await page.goto(server.base_url + "/login?lang=en")
            assert reply is not None and reply.headers["content-security-policy"] == CSP
            await page.fill('input[name="token"]', TOKEN)
            await page.click('button[type="submit"]')
            await page.wait_for_selector("#today")
            background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert background == "rgb(250, 250, 250)"  # the stylesheet, from its own file

            await page.fill('#record-absence input[name="first"]', tomorrow.isoformat())
            await page.fill('#record-absence input[name="reason"]', "<i>probe</i>")
            await page.click('#record-absence button[type="submit"]')
            notice = page.locator("#notice")
            assert await notice.get_attribute("data-notice") == "absence_recorded"
            await page.locator("#recorded-absences button").click()
            assert await notice.get_attribute("data-notice") == "absence_lifted"
            await page.click('header form button[type="submit"]')  # log out
            assert await page.locator("#message").get_attribute("data-code") == "logged_out"
            again = await page.goto(server.base_url + "/")
            assert again is not None and again.status == 401
        finally:
            await browser.close()
    assert not [text for text in console if "Content Security Policy" in text], console


async def test_a_page_reached_through_dns_rebinding_is_refused(tmp_path: Path) -> None:
    async with page_server(tmp_path) as server, async_playwright() as playwright:
        port = server.base_url.rsplit(":", 1)[1]
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--host-resolver-rules=MAP rebind.attacker.example 127.0.0.1"])
        try:
            page = await browser.new_page()
            reply = await page.goto(f"http://rebind.attacker.example:{port}/login?lang=en")
            assert reply is not None and reply.status == 400
            assert "This page does not answer to the name" in await page.inner_text("#problem")
            assert await page.locator('input[name="token"]').count() == 0
        finally:
            await browser.close()


async def test_a_locked_out_browser_is_told_to_wait(tmp_path: Path) -> None:
    async with page_server(tmp_path) as server, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                   args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            await page.goto(server.base_url + "/login?lang=en")
            await page.fill('input[name="token"]', "a-guess-Kq2w-9Zt7x")
            async with aiohttp.ClientSession() as guesser:  # the same machine, guessing
                for n in range(4):
                    async with guesser.post(server.base_url + "/login",
                                            data={"token": f"guess-{n}-Kq2w-9Zt7"}) as wrong:
                        assert wrong.status == 401
            async with page.expect_navigation() as answered:
                await page.click('button[type="submit"]')
            assert (await answered.value).status == 429
            assert await page.inner_text("#message") == (
                "Too many wrong tokens from this computer: try again in 1 s.")
        finally:
            await browser.close()
