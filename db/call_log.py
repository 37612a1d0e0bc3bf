"""The log of inbound calls, kept for the daily figures and the day-by-hour heatmap."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from db.engine import Database
from db.models import Clinic, InboundCall

log = logging.getLogger(__name__)


_LOGGED = insert(InboundCall.__table__).values(clinic_id=select(Clinic.id).where(
    Clinic.key == bindparam("practice")).scalar_subquery())
"""A finished call's row, its practice's id looked up by key inside the insert."""


@dataclass(frozen=True)
class CallRecord:
    """One finished call: written once, at its end, so a rush of new calls waits on nothing."""

    started: dt.datetime
    ended: dt.datetime
    caller: str | None
    dialled: str | None
    language: str
    outcome: str
    practice: str = ""
    """The key of the practice the call ended in; "": it never left the shared menu."""


class CallLog:
    """Writes one row per finished call, the calls that end while others are written in one
    transaction after them (a rush's calls end together); while the store is away (a
    PostgreSQL restart, a locked file), finished calls wait in memory and are written when
    it is back."""

    def __init__(self, database: Database, retry_seconds: float = 1.0,
                 backlog: int = 10_000) -> None:
        self.db = database
        self.retry_seconds = retry_seconds
        self.waiting: collections.deque[CallRecord] = collections.deque(maxlen=backlog)
        self._flushing: asyncio.Task[None] | None = None
        self._next: list[CallRecord] = []
        """Calls ended while a transaction of others was being written: the next one."""
        self._next_written: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None

    async def record(self, call: CallRecord) -> None:
        """Store a finished call, now or once the store answers again."""
        if self.waiting:
            self._wait(call)
            return
        if self._next_written is None:
            self._next_written = asyncio.get_running_loop().create_future()
        written = self._next_written
        self._next.append(call)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_in_turn())
        await asyncio.shield(written)

    async def _write_in_turn(self) -> None:
        """Write the ended calls a transaction at a time, each with every call that ended
        while the one before was written; those the store refuses wait, and so do those
        that end after a refusal (behind the older ones, in order)."""
        while self._next and self._next_written is not None:
            batch, written = self._next, self._next_written
            self._next, self._next_written = [], None
            stored = False
            try:
                stored = not self.waiting and await self._write(batch)
            except Exception as exc:  # not the store away: the calls' tasks report it
                written.set_exception(exc)
                continue
            finally:  # also when cancelled: no call is dropped, none waits on it forever
                if not stored:
                    for call in batch:
                        self._wait(call)
                if not written.done():
                    written.set_result(None)

    def _wait(self, call: CallRecord) -> None:
        """Keep a call the store did not take, and write the waiting ones once it does."""
        if len(self.waiting) == self.waiting.maxlen:
            log.error("call log: %d finished calls wait for the store; dropping the oldest",
                      len(self.waiting))
        self.waiting.append(call)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        """Write the waiting calls, oldest first, as soon as the store takes them."""
        while self.waiting:
            await asyncio.sleep(self.retry_seconds)
            batch = list(self.waiting)
            if await self._write(batch):
                for _ in batch:
                    self.waiting.popleft()
                log.info("call log: wrote %d calls that waited for the store", len(batch))

    async def _write(self, calls: Sequence[CallRecord]) -> bool:
        """One transaction for `calls`, one statement; False when the store cannot take it
        now."""
        rows = [{"started_at": call.started, "ended_at": call.ended, "caller": call.caller,
                 "dialled": (call.dialled or "")[:40] or None, "language": call.language,
                 "outcome": call.outcome, "practice": call.practice} for call in calls]

        async def write(session: AsyncSession) -> None:
            await session.execute(_LOGGED, rows)

        try:
            await self.db.retry_locked(lambda: self.db.write(write))
        except (SQLAlchemyError, OSError) as exc:
            log.warning("call log: the store did not take %d finished calls (%s); they wait",
                        len(calls), type(exc).__name__)
            return False
        return True

    async def close(self) -> None:
        """At shutdown: one last try for the waiting calls, and say if any are lost."""
        if self._writer is not None:
            await asyncio.wait([self._writer])
        if self._flushing is not None:
            self._flushing.cancel()
        if self.waiting and not await self._write(list(self.waiting)):
            log.error("call log: %d finished calls could not be written before stopping",
                      len(self.waiting))
        self.waiting.clear()

