"""Probe: "Nothing slows down token guessing (768 wrong logins a second, then the right one
works)", by the login form or by the Authorization header."""

from __future__ import annotations

import asyncio
import math
import time

from tests.security.wire import TOKEN, Reply, exchange, form, http
from tests.support.server import ServerProcess

OTHER_CLIENT = "127.0.0.2"
"""Another machine, as far as the page can tell (its own loopback address)."""


async def log_in_with(server: ServerProcess, token: str, lang: str = "en",
                      local: str = "127.0.0.1") -> Reply:
    content_type, body = form(("token", token))
    return await exchange(server, http("POST", f"/login?lang={lang}", content_type,
                                       body=body), local)


async def read_status(server: ServerProcess, token: str, local: str = "127.0.0.1") -> Reply:
    return await exchange(server, http("GET", "/api/status",
                                       ("Authorization", f"Bearer {token}")), local)


async def test_wrong_logins_lock_the_client_out_and_the_page_says_so(
        server: ServerProcess) -> None:
    for _ in range(4):  # three typos cost nothing; the fourth wrong token locks for 1 s
        assert (await log_in_with(server, "not-the-token-000")).status == 401
    locked = await log_in_with(server, "not-the-token-001")
    assert (locked.status, locked.header("Retry-After")) == (429, "1")
    assert "Too many wrong tokens from this computer: try again in 1 s." in locked.text
    persian = await log_in_with(server, TOKEN, lang="fa")  # the right token waits too
    assert (persian.status, persian.header("Retry-After")) == (429, "1")
    assert "از این رایانه رمز نادرست زیاد آمده است: ۱ ثانیهٔ دیگر دوباره بکوشید." in persian.text
    other = await log_in_with(server, TOKEN, local=OTHER_CLIENT)
    assert other.status == 303  # someone else is not held up
    await asyncio.sleep(1.05)
    assert (await log_in_with(server, TOKEN)).status == 303


async def test_wrong_bearer_tokens_lock_the_client_out_longer_each_time(
        server: ServerProcess) -> None:
    for _ in range(4):
        assert (await read_status(server, "not-the-token-000")).status == 401
    held = await read_status(server, TOKEN)
    assert (held.status, held.header("Retry-After")) == (429, "1")
    assert (await read_status(server, TOKEN, local=OTHER_CLIENT)).status == 200
    await asyncio.sleep(1.05)
    assert (await read_status(server, "not-the-token-001")).status == 401
    held = await read_status(server, TOKEN)
    assert (held.status, held.header("Retry-After")) == (429, "2")
    await asyncio.sleep(2.05)
    assert (await read_status(server, TOKEN)).status == 200


async def test_a_burst_of_guesses_gets_few_of_them_tried(server: ServerProcess) -> None:
    started = time.monotonic()
    guesses = await asyncio.gather(*(log_in_with(server, f"guess-{n:04d}-Kq2w-9Zt7")
                                     for n in range(200)))
    took = time.monotonic() - started
    tried = [reply.status for reply in guesses if reply.status != 429]
    # four free tries, then one more each time a lock of 1 s, 2 s, 4 s ... runs out: a slow
    # machine that needs over a second for the burst lets a fifth through, never a tenth
    assert set(tried) == {401}
    assert 4 <= len(tried) <= 4 + math.floor(math.log2(took + 1)), (len(tried), took)
