"""A listening socket that closes by itself is a failure to report, not a quiet end."""

from __future__ import annotations

import asyncio


class ListenerClosed(Exception):
    """A listening socket stopped serving while nobody was stopping it."""


async def serve_until_stopped(server: asyncio.Server, what: str) -> None:
    """Accept until cancelled; a listener closed by anything else raises ListenerClosed, so a
    supervisor can report it and open it again."""
    try:
        await server.serve_forever()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        raise ListenerClosed(f"{what} stopped listening") from None
    except RuntimeError as exc:  # serve_forever on a server already closed
        raise ListenerClosed(f"{what} stopped listening: {exc}") from None
