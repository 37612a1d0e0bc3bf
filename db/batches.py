"""Reads that many callers ask at one moment, run as one statement for all of them.

At a peak of the line a thousand callers each want a doctor's bookings or their practice's
revision at once; a statement each costs the line its round trips (most of nobat's CPU there
is the driver's and the sockets'). Batches sends one statement for the first asker at once,
and one for everyone who asked something else while it was out, when it is back. A caller
asking what the statement out already asks takes its answer (the midnight rush's losers all
look around the same slot): none of them sees the store older than a moment before it asked,
which is all a read outside the booking's own transaction can promise anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any

Run = Callable[[frozenset[Any]], Awaitable[Mapping[Any, Any]]]
"""One statement for a batch's items; each item's answer (an item missing: None)."""


class Batches:
    """Per kind of read (its statement and fixed parameters), the items asked and not yet
    sent, and those of the statement out."""

    def __init__(self) -> None:
        self._waiting: dict[Hashable, dict[Hashable, asyncio.Future[Any]]] = {}
        self._out: dict[Hashable, dict[Hashable, asyncio.Future[Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, kind: Hashable, item: Hashable, run: Run) -> Any:
        """`item`'s answer from the statement of `kind` out, if it asks that, or else from the
        next to leave (`run`, the first asker's, for the whole batch)."""
        answer = self._out.get(kind, {}).get(item) or self._waiting.get(kind, {}).get(item)
        if answer is None:
            answer = self._waiting.setdefault(kind, {})[item] = (
                asyncio.get_running_loop().create_future())
            answer.add_done_callback(_retrieved)
        if kind not in self._out:
            self._out[kind] = {}
            task = asyncio.create_task(self._send(kind, run))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(answer)  # a caller hanging up leaves the others' answer

    async def _send(self, kind: Hashable, run: Run) -> None:
        try:
            while batch := self._waiting.pop(kind, None):
                self._out[kind] = batch
                try:
                    found = await run(frozenset(batch))
                except Exception as exc:  # each asker raises it as its own
                    for answer in batch.values():
                        answer.set_exception(exc)
                    continue
                except BaseException:  # shut down: no asker waits for ever
                    for answer in [*batch.values(), *self._waiting.pop(kind, {}).values()]:
                        answer.cancel()
                    raise
                for item, answer in batch.items():
                    answer.set_result(found.get(item))
        finally:
            del self._out[kind]


def _retrieved(answer: asyncio.Future[Any]) -> None:
    """An answer whose askers all hung up is not reported as an error nobody saw."""
    if not answer.cancelled():
        answer.exception()
