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
        self._waiting_since: float | None = None
        """When the reply now awaited was asked for (loop time), or None between replies."""
        self._watchdog: asyncio.TimerHandle | None = None
        self._watched: asyncio.Task[object] | None = None
        """The task whose waits the watchdog times (the call's)."""
        self._expired = False
        self._due = 0.0
        """When the watchdog looks next (loop time)."""

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
            event = await self._reply()
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

    async def _reply(self) -> object:
        """The next event, or TimeoutError when none came within `reply_timeout`. One
        timer per channel watches every wait (an asyncio.timeout per command costs a timer
        of its own, a fifth of a bare command's time)."""
        self._waiting_since = asyncio.get_running_loop().time()
        task = asyncio.current_task()
        if self._watchdog is None or self._watched is not task:
            self._stop_watching()
            self._watched = task
            self._arm(self._waiting_since + self.reply_timeout)
        cancelling = task.cancelling() if task is not None else 0
        try:
            return await self._next()
        except asyncio.CancelledError:
            if self._expired and task is not None and task.uncancel() <= cancelling:
                raise TimeoutError from None  # the watchdog's cancel, and only it
            raise
        finally:
            self._waiting_since, self._expired = None, False

    def _watch(self) -> None:
        """Cancel a wait older than `reply_timeout`; else look again when the current wait
        (or, between replies, a whole timeout) would run out. Stops with its call's task."""
        self._watchdog, task = None, self._watched
        if task is None or task.done():
            return
        if self._waiting_since is None:  # between replies: the flow works; look again later
            self._arm(asyncio.get_running_loop().time() + self.reply_timeout)
        elif self._waiting_since + self.reply_timeout <= self._due:  # (it may fire a hair early)
            self._expired = True
            task.cancel()
        else:
            self._arm(self._waiting_since + self.reply_timeout)

    def _arm(self, due: float) -> None:
        """Look at the wait again at `due` (loop time)."""
        self._due = due
        self._watchdog = asyncio.get_running_loop().call_at(due, self._watch)

    def _stop_watching(self) -> None:
        """The channel is closed, or another task talks on it now."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

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
        self._stop_watching()
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
