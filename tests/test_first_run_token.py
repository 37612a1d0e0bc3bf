"""A first run opens the page as Jupyter does: with no token configured, `nobat serve` makes
one beside the database (mode 0600), keeps it across restarts, and logs a link that logs in
once; a configured token still wins."""

from __future__ import annotations

import asyncio
import os
import re
import stat
from pathlib import Path

import aiohttp

from tests.support.server import ServerProcess, demo_copy
from web.token_strength import weakness

ONCE = re.compile(r"log in at (http://[\d.]+:\d+/login\?once=[\w-]+) \(once")
CONFIGURED = "configured-token-7Hq2-Lm9x-Pw4z"


async def once_link(server: ServerProcess) -> str:
    """The link `nobat serve` logged, once it has (just after "listening")."""
    async with asyncio.timeout(10):
        while True:
            links = [m.group(1) for line in server.log if (m := ONCE.search(line))]
            if links:
                [link] = links
                return link
            await asyncio.sleep(0.05)


async def refused_start(config: Path) -> ServerProcess:
    """`nobat serve` with no token configured, which must refuse to start; what it logged."""
    server = ServerProcess(config, env={"NOBAT_WEB_TOKEN": ""})
    try:
        await server.start(wait_s=20)
    except RuntimeError:
        return server
    await server.stop()
    raise AssertionError("nobat serve started with a token file it should have refused")


async def test_a_first_run_makes_a_token_logs_a_link_that_works_once_and_keeps_the_token(
        tmp_path: Path) -> None:
    config = demo_copy(tmp_path)
    server = await ServerProcess(config, env={"NOBAT_WEB_TOKEN": ""}).start()
    try:
        kept = tmp_path / "web-token"
        token = kept.read_text().strip()
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and weakness(token) is None
        assert token not in "\n".join(server.log)
        link = await once_link(server)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.get(server.base_url + "/?lang=en") as shut:
                page = await shut.text()
                assert shut.status == 401 and "web-token beside its database" in page
            async with browser.get(link) as opened:
                assert opened.status == 200 and opened.url.path == "/"
                assert 'id="today"' in await opened.text()
        async with aiohttp.ClientSession() as other:
            async with other.get(link) as spent:
                assert spent.status == 401
                assert "پیوند ورود یک‌بار به کار رفته" in await spent.text()
            async with other.get(server.base_url + "/api/status",
                                 headers={"Authorization": f"Bearer {token}"}) as api:
                assert api.status == 200
    finally:
        assert await server.stop() == 0

    again = await ServerProcess(config, env={"NOBAT_WEB_TOKEN": ""}).start()
    try:
        assert (tmp_path / "web-token").read_text().strip() == token
        fresh = await once_link(again)
        spent_code = link[link.index("/login"):]
        assert fresh[fresh.index("/login"):] != spent_code
        async with aiohttp.ClientSession() as browser, \
                browser.get(again.base_url + spent_code) as old:
            assert old.status == 401
    finally:
        assert await again.stop() == 0


async def test_a_configured_token_wins_and_nothing_is_made(tmp_path: Path) -> None:
    config = demo_copy(tmp_path)
    server = await ServerProcess(config, env={"NOBAT_WEB_TOKEN": CONFIGURED}).start()
    try:
        assert not (tmp_path / "web-token").exists()
        assert not any(ONCE.search(line) for line in server.log)
        async with aiohttp.ClientSession() as client:
            async with client.get(server.base_url + "/login?once=anything") as refused:
                assert refused.status == 401
            async with client.get(server.base_url + "/api/status",
                                  headers={"Authorization": f"Bearer {CONFIGURED}"}) as api:
                assert api.status == 200
    finally:
        assert await server.stop() == 0


async def test_a_token_file_edited_into_a_weak_one_stops_serve_with_the_reason(
        tmp_path: Path) -> None:
    config = demo_copy(tmp_path)
    (tmp_path / "web-token").write_text("password\n")
    server = await refused_start(config)
    assert any("web-token is not usable" in line and "delete the file" in line
               for line in server.log)


async def test_a_token_file_someone_else_put_beside_the_store_is_refused(tmp_path: Path) -> None:
    """The store's folder is shared with Asterisk's user: a token file that is not nobat's
    own could be one another user knows."""
    config = demo_copy(tmp_path)
    planted = tmp_path / "web-token"
    planted.write_text("Zq8-planted-by-another-user-x7Lm\n")
    os.chown(planted, 65534, 65534)
    server = await refused_start(config)
    assert any("belongs to uid 65534, not to nobat's user" in line for line in server.log)
