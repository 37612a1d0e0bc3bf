"""Reads that many callers ask at one moment, run as one statement for all of them.

At a peak of the line a thousand callers each want a doctor's bookings or their practice's
revision at once; a statement each costs the line its round trips (most of nobat's CPU there
is the driver's and the sockets'). So an asker finding no statement of its kind out sends its
own at once, in its own turn (no hop through the loop: a rush's losers, who ask one after
another, pay nothing for the batching); everyone who asks something else while it is out
goes in one statement when it is back. A caller asking what the statement out already asks
takes its answer (none of them sees the store older than a moment before it asked, which is
all a read outside the booking's own transaction can promise anyway), or, for a kind whose
callers must not move in step, sends its own beside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any

Run = Callable[[frozenset[Any]], Awaitable[Mapping[Any, Any]]]
"""One statement for a batch's items; each item's answer (an item missing: None)."""
Askers = dict[Hashable, list["asyncio.Future[Any]"]]
"""Per item, each asker's own future: one hanging up cancels only its own, and an answer
wakes each asker at once (a future shared behind asyncio.shield takes two turns of the
loop more, a long wait at a saturated loop)."""


class Batches:
    """Per kind of read (its statement and fixed parameters), the askers of the statement out
    and those who asked something else since, to go in the next."""

    def __init__(self) -> None:
        self._out: dict[Hashable, Askers] = {}
        self._waiting: dict[Hashable, Askers] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, kind: Hashable, item: Hashable, run: Run, joins: bool = True) -> Any:
        """`item`'s answer: from a statement of its own sent at once when none of `kind` is
        out, else from the one out if it asks that (or, unless it `joins`, from one of its
        own beside it), else from the next (`run` sends one)."""
        out = self._out.get(kind)
        if out is None:
            return await self._own(kind, item, run)
        if item in out and not joins:
            return (await run(frozenset((item,)))).get(item)
        answer = asyncio.get_running_loop().create_future()
        answer.add_done_callback(_retrieved)
        (out if item in out else self._waiting.setdefault(kind, {})).setdefault(
            item, []).append(answer)
        return await answer

    async def _own(self, kind: Hashable, item: Hashable, run: Run) -> Any:
        out: Askers = {item: []}
        self._out[kind] = out
        try:
            found = await run(frozenset(out))
        except Exception as exc:
            _tell(out, exc)  # whoever joined it raises it too
            raise
        except BaseException:  # this caller hung up: whoever joined it asks in the next
            if out[item]:
                self._waiting.setdefault(kind, {}).setdefault(item, []).extend(out[item])
            raise
        else:
            _tell(out, found)
        finally:
            del self._out[kind]
            if kind in self._waiting:
                self._start(kind, run)
        return found.get(item)

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
                    _tell(batch, exc)
                    continue
                except BaseException:  # shut down: no asker waits for ever
                    for askers in [*batch.values(), *self._waiting.pop(kind, {}).values()]:
                        for answer in askers:
                            answer.cancel()
                    raise
                _tell(batch, found)
        finally:
            del self._out[kind]


def _tell(askers: Askers, found: Mapping[Any, Any] | Exception) -> None:
    """Each asker still waiting its item's answer, or the statement's error."""
    for item, answers in askers.items():
        for answer in answers:
            if answer.done():  # hung up
                continue
            if isinstance(found, Exception):
                answer.set_exception(found)
            else:
                answer.set_result(found.get(item))


def _retrieved(answer: asyncio.Future[Any]) -> None:
    """An error whose asker hung up as it came is not reported as one nobody saw."""
    if not answer.cancelled():
        answer.exception()
