"""A listening socket that closes by itself is a failure to report, not a quiet end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Opener = Callable[[str, int], Awaitable[asyncio.Server]]
"""Opens a server on (host, port): asyncio.start_server or loop.create_server, bound."""


class ListenerClosed(Exception):
    """A listening socket stopped serving while nobody was stopping it."""


class Listener:
    """One of nobat's doors (FastAGI, the status page) as the supervisor keeps it: opened at
    start, where a taken address is the OSError it is; opened again on the same address if
    it ever closes by itself."""

    def __init__(self, what: str, opener: Opener, host: str, port: int) -> None:
        self.what, self._opener, self._address = what, opener, (host, port)
        self._server: asyncio.Server | None = None

    @property
    def listening(self) -> bool:
        """Whether the door takes connections now."""
        return self._server is not None and self._server.is_serving()

    async def open(self) -> list[tuple[str, int]]:
        """Listen, and return each bound (host, port); port 0 becomes the one given."""
        self._server = await self._opener(*self._address)
        bound = [(sock.getsockname()[0], sock.getsockname()[1]) for sock in self._server.sockets]
        self._address = (self._address[0], bound[0][1])
        return bound

    async def serve(self) -> None:
        """Accept until cancelled; a listener closed by anything else raises ListenerClosed,
        so the supervisor reports it, and its next run opens it again."""
        if self._server is None:
            raise RuntimeError(f"{self.what}: serve() before open()")
        if not self._server.is_serving():
            await self.open()
            log.info("%s listening again on %s:%s", self.what, *self._address)
        assert self._server is not None
        try:
            await self._server.serve_forever()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise ListenerClosed(f"{self.what} stopped listening") from None
        except RuntimeError as exc:  # serve_forever on a server already closed
            raise ListenerClosed(f"{self.what} stopped listening: {exc}") from None

    def close(self) -> None:
        """Stop listening; connections already open are their owner's to end."""
        if self._server is not None:
            self._server.close()
