"""The FastAGI probes, replayed against a running `nobat serve` over real sockets.

Each was found by playing Asterisk from another process on the same host: with no secret,
anyone who reached the port could hear a patient's bookings, book, cancel and store survey
answers; silent clients held the call slots. Every test here failed before the gate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select

from db.models import Appointment
from ivr.agi_protocol import AgiClientConnection, AgiEnvironment
from protocol.call_token import call_token
from tests.fakepbx.agi_caller import DIALPLAN_SECRET, place_call
from tests.fakepbx.script import Caller, Hear, Wait
from tests.support.server import ServerProcess, demo_copy, demo_store, edit_config

PATIENT = "09121234567"
BOOKS_SATURDAY = (Hear("main-menu"), "1", Hear("choose-specialty"), "1", Hear("choose-day"),
                  "1", Hear("choose-time"), "1", Hear("confirm-keys"), "1",
                  Hear("anything-else"), "9")


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """`nobat serve` on the demo clinic with the dialplan's secret set."""
    server = await ServerProcess(demo_copy(tmp_path)).start()
    try:
        yield server
    finally:
        await server.stop()


async def booked(folder: Path) -> int:
    database = await demo_store(folder)
    try:
        async with database.reading() as session:
            return await session.scalar(select(func.count()).select_from(Appointment)) or 0
    finally:
        await database.close()


async def forged(port: int, args: tuple[str, ...], script: str = "ivr",
                 **values: str) -> tuple[bytes, float]:
    """Send an environment as Asterisk would, and read what nobat sends back until it
    closes: a gate that holds sends nothing at all."""
    began = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    env = AgiEnvironment.for_request(f"agi://127.0.0.1:{port}/{script}", args,
                                     callerid=PATIENT, **values)
    writer.write(AgiClientConnection().send(env))
    await writer.drain()
    received = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return received, time.monotonic() - began


@pytest.mark.parametrize("args", [(), ("",), ("key=",), ("key=guessed-secret-0000000",),
                                  (f"key={DIALPLAN_SECRET}x",), (f"key={DIALPLAN_SECRET[:-1]}",),
                                  (f"KEY={DIALPLAN_SECRET}",)],
                         ids=["none", "empty-arg", "empty", "guessed", "longer", "shorter",
                              "wrong-name"])
async def test_a_request_without_the_secret_gets_no_command_at_all(
        served: ServerProcess, args: tuple[str, ...]) -> None:
    received, seconds = await forged(served.fastagi_port, args)
    assert received == b""
    assert seconds < 2


async def test_a_forged_caller_books_nothing_and_hears_nothing(
        served: ServerProcess, tmp_path: Path) -> None:
    heard = await place_call("127.0.0.1", served.fastagi_port,
                             Caller.dialling(PATIENT, *BOOKS_SATURDAY), secret=None,
                             strict=False)
    assert heard.exchanges == [] and heard.prompts == []
    assert await booked(tmp_path) == 0
    await place_call("127.0.0.1", served.fastagi_port, Caller.dialling(PATIENT, *BOOKS_SATURDAY))
    assert await booked(tmp_path) == 1  # the same call with the dialplan's secret books


async def test_a_flood_of_forged_requests_is_logged_once(served: ServerProcess) -> None:
    await asyncio.gather(*(forged(served.fastagi_port, ("key=nope-nope-nope-nope",))
                           for _ in range(200)))
    refusals = [line for line in served.log if "FastAGI: refused" in line]
    assert len(refusals) == 1
    assert "no or wrong secret" in refusals[0]
    assert DIALPLAN_SECRET not in "\n".join(served.log)


async def test_a_peer_outside_the_allow_list_is_cut_off_unread(tmp_path: Path) -> None:
    config = demo_copy(tmp_path)
    edit_config(config, ('allow = ["127.0.0.1", "::1"]', 'allow = ["192.0.2.0/24"]'))
    server = await ServerProcess(config).start()
    try:
        try:
            received, _ = await forged(server.fastagi_port, (f"key={DIALPLAN_SECRET}",))
        except ConnectionResetError:
            received = b""  # cut off before our environment was even read
    finally:
        await server.stop()
    assert received == b""
    assert any("peer not allowed" in line for line in server.log)


async def test_with_no_secret_set_every_request_is_refused_and_the_page_says_so(
        tmp_path: Path) -> None:
    config = demo_copy(tmp_path)
    edit_config(config, (f'secret = "{DIALPLAN_SECRET}"', 'secret = ""'),
                ('token = ""', 'token = "a-long-random-page-token-0123456789"'))
    server = await ServerProcess(config).start()
    try:
        received, _ = await forged(server.fastagi_port, ("key=",))
        assert received == b""
        headers = {"Authorization": "Bearer a-long-random-page-token-0123456789"}
        async with aiohttp.ClientSession() as http, \
                http.get(f"{server.base_url}/api/status", headers=headers) as reply:
            status = await reply.json()
    finally:
        await server.stop()
    assert status["health"]["fastagi"] == "no_secret"
    assert any("fastagi.secret (or NOBAT_FASTAGI_SECRET) is not set" in line
               for line in server.log)


async def hung_up(reader: asyncio.StreamReader) -> bool:
    """Whether the server closed the connection without a word: an end of file, or a reset
    when it closed before reading what the client had sent."""
    try:
        return await reader.read() == b""
    except ConnectionResetError:
        return True


async def test_silent_clients_at_the_cap_cannot_starve_a_real_call(tmp_path: Path) -> None:
    config = demo_copy(tmp_path, max_calls=20)
    server = await ServerProcess(config).start()
    loris = []
    try:
        for _ in range(60):  # three times the cap, each dribbling half an environment
            reader, writer = await asyncio.open_connection("127.0.0.1", server.fastagi_port)
            writer.write(b"agi_network: yes\n")
            loris.append((reader, writer))
        heard = await place_call("127.0.0.1", server.fastagi_port,
                                 Caller.dialling(PATIENT, Hear("main-menu"), "9"))
        assert heard.prompts[-1].endswith("fa/goodbye")
        cut = await asyncio.gather(*(asyncio.wait_for(hung_up(r), 5) for r, _ in loris))
        assert cut == [True] * 60  # evicted for newcomers, or timed out: none kept a slot
    finally:
        for _, writer in loris:
            writer.close()
        await server.stop()


async def test_connections_with_an_unknown_script_are_counted_and_hung_up(
        served: ServerProcess) -> None:
    replies = await asyncio.gather(*(
        forged(served.fastagi_port, (f"key={DIALPLAN_SECRET}",), script="no-such-flow")
        for _ in range(150)))
    assert {received for received, _ in replies} == {b"HANGUP\n"}
    heard = await place_call("127.0.0.1", served.fastagi_port,
                             Caller.dialling(PATIENT, Hear("main-menu"), "9"))
    assert heard.prompts[-1].endswith("fa/goodbye")


async def test_agi_values_cannot_forge_log_lines(served: ServerProcess) -> None:
    forged_id = "x\r2026-01-01 00:00:00,000 ERROR forged: line\x1b[2K"
    await place_call("127.0.0.1", served.fastagi_port, Caller.dialling(PATIENT, Wait(1)),
                     script="patient-call", strict=False, answered=True,
                     args=(f"call={call_token(DIALPLAN_SECRET, forged_id)}",),
                     environment={"uniqueid": forged_id})
    await asyncio.sleep(0.2)  # the warning reaches the log
    assert not any("\r" in line or "\x1b" in line for line in served.log)
    assert any("no call of nobat's is ringing it" in line
               and "x\\r2026-01-01" in line and "line\\x1b[2K" in line for line in served.log)
