"""asyncio streams that read each socket into one shared buffer, not a fresh 256 KiB one.

asyncio's streams read with `sock.recv(256 KiB)` and shrink the result: a mmap and a munmap
for every AGI reply while glibc maps blocks that size apart (as `nobat serve` holds it to,
nobat/malloc_tuning.py), or a heap left in holes once it serves them from there (CPython
issue 85451). Through `recv_into` a read costs only the bytes it brought.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

READ_SIZE = 64 * 1024
"""The most one read takes; a longer message arrives in several, as on any socket."""

_local = threading.local()
"""The read buffer of each thread's event loop: a read is copied out before the next."""

ClientConnected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class SmallReadsProtocol(asyncio.StreamReaderProtocol, asyncio.BufferedProtocol):
    """A stream's protocol that asyncio hands a buffer to fill, each read then passed on as
    bytes of its own length."""

    def get_buffer(self, sizehint: int) -> memoryview:
        """The thread's buffer, whatever asyncio hints: it fills at most READ_SIZE."""
        view: memoryview | None = getattr(_local, "view", None)
        if view is None:
            view = _local.view = memoryview(bytearray(READ_SIZE))
        return view

    def buffer_updated(self, nbytes: int) -> None:
        """Copy the read out at its own size, before the buffer takes the next one."""
        self.data_received(bytes(_local.view[:nbytes]))


async def start_server(connected: ClientConnected, host: str, port: int,
                       limit: int) -> asyncio.Server:
    """As asyncio.start_server, on SmallReadsProtocol."""
    loop = asyncio.get_running_loop()

    def accepted() -> SmallReadsProtocol:
        return SmallReadsProtocol(asyncio.StreamReader(limit, loop), connected, loop)

    return await loop.create_server(accepted, host, port)


async def open_connection(host: str, port: int, limit: int = 2**16,
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """As asyncio.open_connection, on SmallReadsProtocol."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit, loop)
    protocol = SmallReadsProtocol(reader, loop=loop)
    transport, _ = await loop.create_connection(lambda: protocol, host, port)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
