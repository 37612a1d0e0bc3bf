"""Reads that many callers ask at one moment, run as one statement for all of them.

At a peak of the line a thousand callers each want a doctor's bookings or their practice's
revision at once; a statement each costs the line its round trips (most of nobat's CPU there
is the driver's and the sockets'). Batches runs one statement for the first asker at once and
one for everyone who asked while it was out, when it is back, so no answer is older than its
question (a joiner never takes the answer of a statement that had already left).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any

Run = Callable[[frozenset[Any]], Awaitable[Mapping[Any, Any]]]
"""One statement for a batch's items; each item's answer (an item missing: None)."""


class Batches:
    """Per kind of read (its statement and fixed parameters), the items asked and not yet
    sent, and whether that kind's statement is out."""

    def __init__(self) -> None:
        self._waiting: dict[Hashable, dict[Hashable, asyncio.Future[Any]]] = {}
        self._out: set[Hashable] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, kind: Hashable, item: Hashable, run: Run) -> Any:
        """`item`'s answer from the next statement of `kind` to leave (`run`, the first
        asker's, for the whole batch)."""
        waiting = self._waiting.setdefault(kind, {})
        answer = waiting.get(item)
        if answer is None:
            answer = waiting[item] = asyncio.get_running_loop().create_future()
            answer.add_done_callback(_retrieved)
        if kind not in self._out:
            self._out.add(kind)
            task = asyncio.create_task(self._send(kind, run))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(answer)  # a caller hanging up leaves the others' answer

    async def _send(self, kind: Hashable, run: Run) -> None:
        try:
            while batch := self._waiting.pop(kind, None):
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
            self._out.discard(kind)


def _retrieved(answer: asyncio.Future[Any]) -> None:
    """An answer whose askers all hung up is not reported as an error nobody saw."""
    if not answer.cancelled():
        answer.exception()
