"""The status page's flow reload: token required, a broken edit answered with its lines."""

from __future__ import annotations

import shutil
from pathlib import Path

import aiohttp

from tests.support.ivr import ROOT
from tests.support.server import ServerProcess, demo_copy
from tests.test_flow_reload import ADDRESS_KEY, BROKEN_KEY, HOURS_KEY, edit

TOKEN = "test-token-1234-Wz9k"


async def request(server: ServerProcess, method: str, path: str, token: str | None = None
                  ) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.request(
            method, f"{server.base_url}{path}", headers=headers) as reply:
        return reply.status, await reply.json()


async def test_reload_needs_the_token_and_reports_a_broken_edit(tmp_path: Path) -> None:
    config = demo_copy(tmp_path)
    shutil.copytree(ROOT / "flows", tmp_path / "flows")
    text = config.read_text().replace(f'flows = "{ROOT / "flows"}"', 'flows = "flows"')
    config.write_text(text.replace("watch_seconds = 2", "watch_seconds = 0"))
    server = await ServerProcess(config, env={"NOBAT_WEB_TOKEN": TOKEN}).start()
    try:
        assert (await request(server, "GET", "/api/flows"))[0] == 401
        assert (await request(server, "POST", "/api/flows/reload", "wrong"))[0] == 401
        status, state = await request(server, "GET", "/api/flows", TOKEN)
        assert status == 200 and "main@" in str(state["version"])
        edit(tmp_path / "flows", ADDRESS_KEY, BROKEN_KEY)
        status, state = await request(server, "POST", "/api/flows/reload", TOKEN)
        assert status == 422 and state["changed"] is False
        assert f"{tmp_path / 'flows' / 'main.toml'}:" in str(state["last_error"])
        status, health = await request(server, "GET", "/healthz")
        assert (status, health["status"], health["flows"]) == (200, "ok", "error")
        edit(tmp_path / "flows", BROKEN_KEY, HOURS_KEY)
        status, fixed = await request(server, "POST", "/api/flows/reload", TOKEN)
        assert (status, fixed["changed"], fixed["last_error"]) == (200, True, None)
        assert fixed["version"] != state["version"]
        assert (await request(server, "GET", "/healthz"))[1]["flows"] == "ok"
        assert all(TOKEN not in line for line in server.log)
    finally:
        assert await server.stop() == 0


async def test_without_a_configured_token_the_api_takes_only_the_one_a_first_run_made(
        tmp_path: Path) -> None:
    server = await ServerProcess(demo_copy(tmp_path), env={"NOBAT_WEB_TOKEN": ""}).start()
    try:
        made = (tmp_path / "web-token").read_text().strip()
        assert (await request(server, "GET", "/api/flows", "anything"))[0] == 401
        assert (await request(server, "GET", "/api/flows", made))[0] == 200
        assert (await request(server, "GET", "/healthz"))[0] == 200
    finally:
        await server.stop()
