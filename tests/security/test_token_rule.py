"""Probe: "Short tokens are accepted." `nobat serve` now refuses to start with a guessable
token, with one line naming the key (exit code 2, as the config errors do); an empty one
still starts it with the page shut."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.security.wire import exchange, http, page_server
from tests.support.server import demo_copy


@pytest.mark.parametrize("token", ["page1234", "a" * 20, "abcdefghijklmnopqrst",
                                   "passwordpassword"])
async def test_serve_refuses_a_guessable_token(tmp_path: Path, token: str) -> None:
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nobat", "-c", str(demo_copy(tmp_path)), "serve",
        env={**os.environ, "NOBAT_WEB_TOKEN": token},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(serve.communicate(), 20)
    finally:
        if serve.returncode is None:  # it served: the probe's finding
            serve.kill()
            await serve.wait()
    assert serve.returncode == 2
    [line] = err.decode().splitlines()
    assert line.startswith("NOBAT_WEB_TOKEN: web.token: expected at least 16 random-looking "
                           "characters, e.g. from `openssl rand -hex 16`, but ")
    assert token not in line and out == b""
    assert not (tmp_path / "nobat.db").exists()  # it stopped before opening anything


async def test_with_no_token_set_serve_makes_one_and_an_empty_one_opens_nothing(
        tmp_path: Path) -> None:
    async with page_server(tmp_path, token="") as server:
        made = (tmp_path / "web-token").read_text().strip()
        assert (await exchange(server, http("GET", "/api/status",
                                            ("Authorization", "Bearer ")))).status == 401
        assert (await exchange(server, http("GET", "/api/status",
                                            ("Authorization", f"Bearer {made}")))).status == 200
        assert (await exchange(server, http("GET", "/healthz"))).status == 200
