"""The status page's listening socket, kept open by the supervisor like nobat's other doors."""

from __future__ import annotations

import asyncio

from aiohttp import web

from protocol.listening import serve_until_stopped


class PageListener:
    """Serves an aiohttp runner on one address; opened again there if it ever closes."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self.runner = runner
        self._address = (host, port)
        self._server: asyncio.Server | None = None

    async def open(self) -> list[tuple[str, int]]:
        """Listen, and return each bound (host, port); OSError if the address is taken."""
        handler = self.runner.server
        if handler is None:
            raise RuntimeError("PageListener.open() before the runner's setup()")
        self._server = await asyncio.get_running_loop().create_server(handler, *self._address)
        bound = [(sock.getsockname()[0], sock.getsockname()[1]) for sock in self._server.sockets]
        self._address = (self._address[0], bound[0][1])  # port 0: keep the one given
        return bound

    async def serve(self) -> None:
        """Accept until cancelled; a listener that closed by itself raises, and the next run
        opens it again on the same address."""
        if self._server is None or not self._server.is_serving():
            await self.open()
        assert self._server is not None
        await serve_until_stopped(self._server, "the status page")

    def close(self) -> None:
        """Stop listening; the runner's cleanup ends the connections still open."""
        if self._server is not None:
            self._server.close()
