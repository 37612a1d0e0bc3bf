"""Group commit for SQLite's one writer: writes queued at the same moment share a transaction,
run in the writer's own thread in one hop.

In a rush, hundreds of bookings of one process would each take SQLite's file lock in turn
(BEGIN IMMEDIATE, and a busy wait for every other process's turn). Here they queue, and one
transaction runs as many of them as are waiting, each in its own SAVEPOINT: a write that
fails (a unique index, a rule) rolls back alone, and every result is handed out only once
the whole group is committed. A group that cannot commit fails every write in it, as each
would have failed alone, so callers retry it exactly as before.

The group runs on a synchronous engine in a thread of its own. Through aiosqlite each
statement is several hops between its thread and the event loop, and under load each hop
waits behind every caller's ready work: a booking's eight statements took a second at 1,000
callers. Here the whole group is one hop, and the loop never waits on the file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

T = TypeVar("T")
Work = Callable[[AsyncSession], Awaitable[Any]]
Outcome = tuple["_Queued", Any, BaseException | None]

CLOSED = "the store is closed: the write was not made"

GROUP_MAX = 512
"""Writes one transaction takes at most, so a group's commit does not wait on a long queue."""


@dataclass
class _Queued:
    """A write waiting for its group, and where its result goes."""

    work: Work
    result: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class WriteGroups:
    """The queue of one process's grouped writes, the task that hands them to the writer's
    thread, and that thread."""

    def __init__(self, engine: Engine, turn: AbstractAsyncContextManager[Any]) -> None:
        self.engine = engine
        """A synchronous engine of the store's file whose transactions begin IMMEDIATE."""
        self._turn = turn
        """Held while a group is written: the process's other writers (Database.writing) take
        it too, so they and the groups take SQLite's lock in turn, not by its busy handler."""
        self._queue: list[_Queued] = []
        self._runner: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="nobat-write")
        self._closed = False

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `work` in the next group; its result once that group is committed."""
        if self._closed:
            raise RuntimeError(CLOSED)
        queued = _Queued(work)
        self._queue.append(queued)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._drain())
        result: T = await queued.result  # cancelled before its group ran: nothing is written
        return result

    def close(self) -> None:
        """Let a group being written finish, then release the thread and connection."""
        self._closed = True
        self._thread.shutdown(wait=True)
        self.engine.dispose()

    async def _drain(self) -> None:
        while self._queue:
            group, self._queue = self._queue[:GROUP_MAX], self._queue[GROUP_MAX:]
            try:
                async with self._turn:  # this process's other writers wait theirs, as before
                    outcomes = await self._written(group)
            except asyncio.CancelledError:  # shutting down: what was not written is not
                for queued in [*group, *self._queue]:
                    _hand_out(queued, None, asyncio.CancelledError())
                raise
            for queued, value, error in outcomes:
                _hand_out(queued, value, error)

    async def _written(self, group: list[_Queued]) -> list[Outcome]:
        """The group's outcomes. Once in the writer's thread a group ends there, even when
        this task is cancelled meanwhile (shutting down): its outcomes are handed out first."""
        try:
            writing = asyncio.get_running_loop().run_in_executor(
                self._thread, self._commit, [q for q in group if not q.result.done()])
        except RuntimeError:  # the store closed meanwhile: nothing more is written
            return [(queued, None, RuntimeError(CLOSED)) for queued in group]
        cancelled = False
        while not writing.done():
            try:
                await asyncio.wait([writing])
            except asyncio.CancelledError:
                cancelled = True
        failed = writing.exception()
        outcomes = writing.result() if failed is None else [(q, None, failed) for q in group]
        if cancelled:
            for queued, value, error in outcomes:
                _hand_out(queued, value, error)
            raise asyncio.CancelledError
        return outcomes

    def _commit(self, group: list[_Queued]) -> list[Outcome]:
        """In the writer's thread: one transaction, one SAVEPOINT per write; returns once
        committed."""
        outcomes: list[Outcome] = []
        if not group:
            return outcomes
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            inline = cast(AsyncSession, InlineSession(session))
            for queued in group:
                try:
                    with session.begin_nested():
                        outcomes.append((queued, _finish(queued.work(inline)), None))
                except Exception as exc:  # this write alone is rolled back
                    outcomes.append((queued, None, exc))
        return outcomes


class InlineSession:
    """The part of AsyncSession the grouped writes use, on a synchronous Session: each call is
    done when it returns, so a write's coroutine runs to its end without ever waiting."""

    def __init__(self, session: Session) -> None:
        self.sync_session = session

    def add(self, instance: object) -> None:
        """Session.add."""
        self.sync_session.add(instance)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Session.execute."""
        return self.sync_session.execute(*args, **kwargs)

    async def scalar(self, *args: Any, **kwargs: Any) -> Any:
        """Session.scalar."""
        return self.sync_session.scalar(*args, **kwargs)

    async def flush(self) -> None:
        """Session.flush."""
        self.sync_session.flush()

    async def connection(self) -> InlineConnection:
        """The transaction's connection, for Core reads inside it (db/reads.py `within`)."""
        return InlineConnection(self.sync_session)


@dataclass(frozen=True)
class InlineConnection:
    """AsyncConnection.execute on the writer's Session."""

    session: Session

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Connection.execute, in the session's transaction."""
        return self.session.connection().execute(*args, **kwargs)


def _finish(step: Awaitable[Any]) -> Any:
    """Run a write's coroutine, which never waits on an InlineSession, to its value."""
    coroutine = cast(Coroutine[Any, Any, Any], step)
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("a grouped write waited on something other than its session")


def _hand_out(queued: _Queued, value: Any, error: BaseException | None) -> None:
    if queued.result.done():
        return
    if error is None:
        queued.result.set_result(value)
    else:
        queued.result.set_exception(error)
