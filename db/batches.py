"""Reads that many callers ask at one moment, run as one statement for all of them.

At a peak of the line a thousand callers each want a doctor's bookings or their practice's
revision at once; a statement each costs the line its round trips (most of nobat's CPU there
is the driver's and the sockets'). So an asker finding no statement of its kind out sends its
own at once, in its own turn (no hop through the loop: a rush's losers, who ask one after
another, pay nothing for the batching); everyone who asks something else while it is out
goes in one statement when it is back. A caller asking what the statement out already asks
takes its answer: none of them sees the store older than a moment before it asked, which is
all a read outside the booking's own transaction can promise anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any

Run = Callable[[frozenset[Any]], Awaitable[Mapping[Any, Any]]]
"""One statement for a batch's items; each item's answer (an item missing: None)."""
Answers = dict[Hashable, "asyncio.Future[Any]"]


class Batches:
    """Per kind of read (its statement and fixed parameters), the items of the statement out
    and those asked since, to go in the next."""

    def __init__(self) -> None:
        self._out: dict[Hashable, Answers] = {}
        self._waiting: dict[Hashable, Answers] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, kind: Hashable, item: Hashable, run: Run) -> Any:
        """`item`'s answer: from a statement of its own sent at once when none of `kind` is
        out, else from the one out if it asks that, else from the next (`run` sends one)."""
        out = self._out.get(kind)
        if out is None:
            return await self._own(kind, item, run)
        answer = out.get(item) or self._waiting.get(kind, {}).get(item)
        if answer is None:
            answer = self._waiting.setdefault(kind, {})[item] = _answer()
        return await asyncio.shield(answer)  # a caller hanging up leaves the others' answer

    async def _own(self, kind: Hashable, item: Hashable, run: Run) -> Any:
        answer = _answer()
        self._out[kind] = {item: answer}
        try:
            found = await run(frozenset((item,)))
        except Exception as exc:
            answer.set_exception(exc)  # and to whoever joined it
            raise
        except BaseException:  # this caller hung up: whoever joined it asks in the next
            self._waiting.setdefault(kind, {}).setdefault(item, answer)
            raise
        else:
            answer.set_result(found.get(item))
        finally:
            del self._out[kind]
            if kind in self._waiting:
                self._start(kind, run)
        return answer.result()

    def _start(self, kind: Hashable, run: Run) -> None:
        self._out[kind] = {}
        task = asyncio.create_task(self._send(kind, run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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


def _answer() -> asyncio.Future[Any]:
    answer = asyncio.get_running_loop().create_future()
    answer.add_done_callback(_retrieved)
    return answer


def _retrieved(answer: asyncio.Future[Any]) -> None:
    """An answer whose askers all hung up is not reported as an error nobody saw."""
    if not answer.cancelled():
        answer.exception()
