"""The FastAGI listener survives bad clients while a normal call carries on beside them."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from db.engine import Database
from db.models import InboundCall
from ivr.agi_protocol import AgiClientConnection, AgiEnvironment
from ivr.fastagi import Limits
from tests.fakepbx.agi_caller import DIALPLAN_SECRET
from tests.fakepbx.script import Caller, HangUp, Wait
from tests.support.clinics import Clock
from tests.support.ivr import IvrRig, ivr_rig

SATURDAY_9 = dt.datetime(2026, 11, 28, 9, 0, tzinfo=ZoneInfo("Asia/Tehran")).astimezone(dt.UTC)
QUICK = Limits(max_connections=20, environment_seconds=0.5, environment_bytes=8 * 1024)
ENV = AgiClientConnection().send(AgiEnvironment.for_request(
    "agi://127.0.0.1:4573/ivr", (f"key={DIALPLAN_SECRET}",),
    channel="Local/bad@fake-phones-00000001;1"))
GOODBYE_CALLER = Caller.dialling("09121234567", "19", Wait(30), HangUp())


@pytest.fixture
async def rig(database: Database) -> AsyncIterator[IvrRig]:
    async with ivr_rig(database, Clock(SATURDAY_9), QUICK) as started:
        yield started


async def normal_call_completes(rig: IvrRig) -> None:
    heard = await rig.call(GOODBYE_CALLER)
    assert heard.prompts[-2:] == ["fa/main-menu", "fa/goodbye"]
    assert [e.command.args[:2] for e in heard.transcript.exchanges[-2:]] == [
        (), ("NOBAT_RESULT", "done")]


async def send(rig: IvrRig, data: bytes, close: bool) -> tuple[asyncio.StreamReader,
                                                               asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.port)
    writer.write(data)
    await writer.drain()
    if close:
        writer.write_eof()
    return reader, writer


BadClient = Callable[[IvrRig], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
BAD_CLIENTS: dict[str, tuple[BadClient, str]] = {
    "half an environment, then silence": (
        lambda rig: send(rig, ENV[:200], close=False), "timed out"),
    "half an environment, then close": (
        lambda rig: send(rig, ENV[:200], close=True),
        "connection closed in the middle of the AGI environment"),
    "an environment larger than the limit": (
        lambda rig: send(rig, b"".join(b"agi_x%d: %s\n" % (n, b"y" * 60) for n in range(200)),
                         close=False), "longer than"),
    "bytes that are not UTF-8": (
        lambda rig: send(rig, b"agi_network: yes\nagi_request: \xff\xfe\n\n", close=False),
        "not UTF-8"),
    "an HTTP request": (
        lambda rig: send(rig, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", close=False),
        "expected an agi_* variable"),
}


@pytest.mark.parametrize("name", BAD_CLIENTS)
async def test_a_bad_client_is_dropped_and_a_normal_call_completes(
        rig: IvrRig, name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "ivr.fastagi_gate")
    connect, reason = BAD_CLIENTS[name]
    reader, writer = await connect(rig)
    await normal_call_completes(rig)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert any("refused" in r.message and reason in r.message for r in caplog.records)


async def test_a_flood_of_idle_connections_does_not_stop_calls(rig: IvrRig) -> None:
    flood = [await asyncio.open_connection("127.0.0.1", rig.port) for _ in range(60)]
    await normal_call_completes(rig)
    closed = await asyncio.gather(*(asyncio.wait_for(r.read(), 5) for r, _ in flood))
    assert closed == [b""] * 60
    assert rig.server.rejected >= 60
    for _, writer in flood:
        writer.close()


async def test_a_client_that_closes_mid_call_leaves_a_closed_record(
        rig: IvrRig, database: Database) -> None:
    reader, writer = await send(rig, ENV, close=False)
    first = await asyncio.wait_for(reader.readline(), 5)
    assert first == b"CHANNEL STATUS\n"  # nobat's first step: is the call answered yet?
    writer.close()
    await normal_call_completes(rig)
    for _ in range(50):
        if not rig.line.calls:
            break
        await asyncio.sleep(0.05)
    assert rig.line.calls == {}
    async with database.reading() as session:
        outcomes = sorted((await session.scalars(select(InboundCall.outcome))).all())
    assert outcomes == ["completed", "hung_up"]


async def test_an_unknown_script_is_hung_up_with_a_clear_log(
        rig: IvrRig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "ivr.fastagi_gate")
    env = AgiClientConnection().send(AgiEnvironment.for_request(
        "agi://127.0.0.1/nothing-here", (f"key={DIALPLAN_SECRET}",)))
    reader, writer = await send(rig, env, close=False)
    assert await asyncio.wait_for(reader.readline(), 5) == b"HANGUP\n"
    writer.write(b"200 result=1\n")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert "unknown AGI script: 'nothing-here'; known: ivr, patient-call" in caplog.text


async def test_a_peer_that_stops_answering_mid_call_is_timed_out(
        database: Database, caplog: pytest.LogCaptureFixture) -> None:
    # Asterisk answers each command within the prompt or wait it asked for: a peer silent
    # for longer than reply_seconds is dead, and its call ends (logged) instead of waiting.
    caplog.set_level(logging.WARNING, "ivr.fastagi")
    limits = dataclasses.replace(QUICK, reply_seconds=0.5)
    async with ivr_rig(database, Clock(SATURDAY_9), limits) as rig:
        reader, writer = await send(rig, ENV, close=False)
        assert await asyncio.wait_for(reader.readline(), 5) == b"CHANNEL STATUS\n"
        writer.write(b"200 result=6\n")  # answered; then silence after the next command
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"SET VARIABLE")
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # nobat closed it
        assert 0.4 < asyncio.get_running_loop().time() - started < 3
        writer.close()
        await normal_call_completes(rig)  # a long call's replies, each in time, are fine
    assert any("AGI broke off: timed out" in r.getMessage() for r in caplog.records)
