"""A TCP server on 127.0.0.1 for the length of an `async with`: the tier's FastAGI servers and
the recorder's logging proxy are each one."""

from __future__ import annotations

import asyncio
from typing import Self


class LoopbackServer:
    """Listens on 127.0.0.1 at `port` (0: a free one, then the one it got) while in
    `async with`; each connection goes to `_serve`."""

    port: int = 0
    _server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection, from accept to close."""
        raise NotImplementedError
