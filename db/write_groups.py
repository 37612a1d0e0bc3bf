"""Group commit for SQLite's one writer: writes queued at the same moment share a transaction.

In a rush, hundreds of bookings of one process would each take SQLite's file lock in turn
(BEGIN IMMEDIATE, and a busy wait for every other process's turn). Here they queue, and one
transaction runs as many of them as are waiting, each in its own SAVEPOINT: a write that
fails (a unique index, a rule) rolls back alone, and every result is handed out only once
the whole group is committed. A group that cannot commit fails every write in it, as each
would have failed alone, so callers retry it exactly as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")
Work = Callable[[AsyncSession], Awaitable[Any]]

GROUP_MAX = 512
"""Writes one transaction takes at most, so a group's commit does not wait on a long queue."""


@dataclass
class _Queued:
    """A write waiting for its group, and where its result goes."""

    work: Work
    result: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class WriteGroups:
    """The queue of one process's grouped writes and the task that commits them."""

    def __init__(self, transaction: Callable[[], AbstractAsyncContextManager[AsyncSession]]
                 ) -> None:
        self._transaction = transaction
        self._queue: list[_Queued] = []
        self._runner: asyncio.Task[None] | None = None

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `work` in the next group; its result once that group is committed."""
        queued = _Queued(work)
        self._queue.append(queued)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._drain())
        result: T = await queued.result  # cancelled before its group ran: nothing is written
        return result

    async def _drain(self) -> None:
        while self._queue:
            group, self._queue = self._queue[:GROUP_MAX], self._queue[GROUP_MAX:]
            try:
                outcomes = await self._commit([q for q in group if not q.result.done()])
            except Exception as exc:  # the group's transaction failed: so did every write
                outcomes = [(queued, None, exc) for queued in group]
            except BaseException as exc:  # cancelled (shutting down): nothing was committed
                for queued in [*group, *self._queue]:
                    _hand_out(queued, None, exc)
                raise
            for queued, value, error in outcomes:
                _hand_out(queued, value, error)

    async def _commit(self, group: list[_Queued]
                      ) -> list[tuple[_Queued, Any, BaseException | None]]:
        """One transaction, one SAVEPOINT per write; returns once committed."""
        outcomes: list[tuple[_Queued, Any, BaseException | None]] = []
        if not group:
            return outcomes
        async with self._transaction() as session:
            for queued in group:
                try:
                    async with session.begin_nested():
                        outcomes.append((queued, await queued.work(session), None))
                except Exception as exc:  # this write alone is rolled back
                    outcomes.append((queued, None, exc))
        return outcomes


def _hand_out(queued: _Queued, value: Any, error: BaseException | None) -> None:
    if queued.result.done():
        return
    if error is None:
        queued.result.set_result(value)
    else:
        queued.result.set_exception(error)
