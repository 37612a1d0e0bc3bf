"""One AGI conversation over a pair of streams: commands out, replies in, hang-ups noticed."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable

from ivr.agi_protocol import (
    NEED_DATA,
    AgiEnvironment,
    AgiProtocolError,
    AgiServerConnection,
    Command,
    ConnectionClosed,
    Hangup,
    Reply,
)
from ivr.session import CallerHungUp

log = logging.getLogger(__name__)
READ_CHUNK = 4096


class AgiChannel:
    """Drives the sans-I/O codec over asyncio streams; FastAGI and classic AGI both use it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 *, reply_timeout: float = 900.0, codec: AgiServerConnection | None = None,
                 on_turnaround: Callable[[float], None] | None = None) -> None:
        self.reader = reader
        self.writer = writer
        self.codec = codec or AgiServerConnection()
        self.reply_timeout = reply_timeout
        self.hung_up = False
        self.on_turnaround = on_turnaround
        """Told the seconds from each reply to the next command: nobat's own share of a
        caller's wait (flow logic, store reads and writes)."""
        self._replied: float | None = None

    def caller_hung_up(self) -> None:
        """Asterisk said the caller is gone (classic AGI's SIGHUP): the next command that
        needs a live channel raises CallerHungUp instead of being sent."""
        self.hung_up = True

    async def environment(self) -> AgiEnvironment:
        """Read the agi_* block Asterisk sends first; a broken one raises AgiProtocolError."""
        event = await self._next()
        if isinstance(event, ConnectionClosed):
            raise AgiProtocolError("connection closed before the AGI environment was complete")
        assert isinstance(event, AgiEnvironment)
        return event

    async def run(self, command: Command, *, written: bool = False) -> Reply:
        """Send one command and return its reply; a dead channel raises CallerHungUp.

        `written` is for a command already on the wire (classic AGI answers before asyncio
        is even imported): only its reply is awaited.
        """
        if self.hung_up and command.verb not in ("GET VARIABLE", "SET VARIABLE",
                                                 "GET FULL VARIABLE"):
            raise CallerHungUp()
        try:
            data = self.codec.send(command)
            if self._replied is not None and self.on_turnaround is not None:
                self.on_turnaround(time.perf_counter() - self._replied)
            if not written:
                self.writer.write(data)
                await self.writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise CallerHungUp() from exc
        while True:
            async with asyncio.timeout(self.reply_timeout):
                event = await self._next()
            if isinstance(event, Hangup):
                self.hung_up = True
                continue
            if isinstance(event, ConnectionClosed):
                self.hung_up = True
                raise CallerHungUp()
            assert isinstance(event, Reply)
            if event.code == 511:
                self.hung_up = True
                raise CallerHungUp()
            self._replied = time.perf_counter()
            return event

    async def _next(self) -> object:
        while (event := self.codec.next_event()) is NEED_DATA:
            try:
                data = await self.reader.read(READ_CHUNK)
            except ConnectionError:
                data = b""
            self.codec.receive_data(data)
        return event

    async def close(self) -> None:
        """Close our side; Asterisk answers with a last HANGUP line we need not read."""
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            log.debug("peer was already gone when closing")


async def stdio_streams() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Streams over this process's stdin and stdout, where classic AGI talks."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), sys.stdout)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
