"""nobat's end of one FastAGI connection on nobat's sans-I/O codec, so the tier's scripted
servers (tests/realpbx/test_real_agi.py, the recorder's) read Asterisk the same way."""

from __future__ import annotations

import asyncio

from ivr.agi_protocol import (
    NEED_DATA,
    AgiEnvironment,
    AgiEvent,
    AgiServerConnection,
    Command,
    ConnectionClosed,
    Hangup,
)


class AgiLink:
    """Commands out, Asterisk's environment, replies and HANGUP lines in; a read that takes
    longer than `within` seconds is an error, not a hang."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 within: float) -> None:
        self.reader = reader
        self.writer = writer
        self.within = within
        self.codec = AgiServerConnection()
        self.hung_up = False
        """Whether Asterisk has sent its HANGUP line yet."""

    async def next_event(self) -> AgiEvent:
        """The next thing Asterisk said, reading the socket until it is whole."""
        while (event := self.codec.next_event()) is NEED_DATA:
            self.codec.receive_data(await asyncio.wait_for(self.reader.read(65536),
                                                           self.within))
        self.hung_up = self.hung_up or isinstance(event, Hangup)
        return event

    async def environment(self) -> AgiEnvironment:
        """The agi_* variables Asterisk sends first."""
        event = await self.next_event()
        assert isinstance(event, AgiEnvironment), event
        return event

    async def send(self, command: Command) -> None:
        """Write one command."""
        self.writer.write(self.codec.send(command))
        await self.writer.drain()

    async def finish(self) -> list[AgiEvent]:
        """Close nobat's side, as nobat does when it is done; what Asterisk said until it
        closed too (its HANGUP line)."""
        self.writer.write_eof()
        after: list[AgiEvent] = []
        while not isinstance(event := await self.next_event(), ConnectionClosed):
            after.append(event)
        return after
