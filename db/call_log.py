"""The log of inbound calls, kept for the daily figures and the day-by-hour heatmap."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from db.engine import Database
from db.models import Clinic, InboundCall

log = logging.getLogger(__name__)


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
    """Writes one row per finished call; while the store is away (a PostgreSQL restart, a
    locked file), finished calls wait in memory and are written when it is back."""

    def __init__(self, database: Database, retry_seconds: float = 1.0,
                 backlog: int = 10_000) -> None:
        self.db = database
        self.retry_seconds = retry_seconds
        self.waiting: collections.deque[CallRecord] = collections.deque(maxlen=backlog)
        self._flushing: asyncio.Task[None] | None = None

    async def record(self, call: CallRecord) -> None:
        """Store a finished call, now or once the store answers again."""
        if not self.waiting and await self._write([call]):
            return
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
        """One transaction for `calls`; False when the store cannot take it now."""

        async def rows(session: AsyncSession) -> None:
            clinics = dict((await session.execute(select(Clinic.key, Clinic.id).where(
                Clinic.key.in_({call.practice for call in calls})))).all())
            await session.execute(insert(InboundCall.__table__), [dict(
                started_at=call.started, ended_at=call.ended, caller=call.caller,
                dialled=(call.dialled or "")[:40] or None, language=call.language,
                outcome=call.outcome, clinic_id=clinics.get(call.practice))
                for call in calls])

        try:
            await self.db.retry_locked(lambda: self.db.write(rows))
        except (SQLAlchemyError, OSError) as exc:
            log.warning("call log: the store did not take %d finished calls (%s); they wait",
                        len(calls), type(exc).__name__)
            return False
        return True

    async def close(self) -> None:
        """At shutdown: one last try for the waiting calls, and say if any are lost."""
        if self._flushing is not None:
            self._flushing.cancel()
        if self.waiting and not await self._write(list(self.waiting)):
            log.error("call log: %d finished calls could not be written before stopping",
                      len(self.waiting))
        self.waiting.clear()

