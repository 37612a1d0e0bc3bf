"""An AGI channel's wait for a reply: a silent peer times out, anything else that stops the
call (a shutdown's cancel) stays what it is, and a slow but living peer is waited for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from ivr.agi_channel import AgiChannel
from ivr.agi_protocol import AgiClientConnection, AgiEnvironment, Command

ENV = AgiClientConnection().send(AgiEnvironment.for_request("agi://127.0.0.1/ivr", ()))


@asynccontextmanager
async def channel_to(peer_replies: list[tuple[float, bytes]], reply_timeout: float
                     ) -> AsyncIterator[AgiChannel]:
    """A channel over loopback to a peer that sends its environment, then for each command
    it reads waits the given seconds and sends the given reply (b"": stays silent)."""

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(ENV)
        for delay, reply in peer_replies:
            await reader.readline()
            await asyncio.sleep(delay)
            writer.write(reply)
        await reader.read()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    channel = AgiChannel(reader, writer, reply_timeout=reply_timeout)
    await channel.environment()
    try:
        yield channel
    finally:
        await channel.close()
        server.close()


async def test_a_silent_peer_times_out() -> None:
    async with channel_to([(0, b"200 result=6\n"), (0, b"")], reply_timeout=0.3) as channel:
        assert (await channel.run(Command.of("CHANNEL STATUS"))).result == "6"
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await channel.run(Command.of("ANSWER"))
        assert 0.25 < loop.time() - started < 2


async def test_replies_each_within_the_timeout_are_waited_for_however_long_the_call() -> None:
    replies = [(0.2, b"200 result=0\n")] * 4  # 0.8 s in all, each reply 0.2 s after its command
    async with channel_to(replies, reply_timeout=0.3) as channel:
        for _ in replies:
            assert (await channel.run(Command.of("WAIT FOR DIGIT", 100))).result == "0"


async def test_a_cancel_from_outside_stays_a_cancel() -> None:
    async with channel_to([(0, b"")], reply_timeout=0.3) as channel:
        waiting = asyncio.create_task(channel.run(Command.of("ANSWER")))
        await asyncio.sleep(0.1)
        waiting.cancel()  # nobat shutting down, not the peer falling silent
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0.4)  # the watchdog has nothing left to cancel
